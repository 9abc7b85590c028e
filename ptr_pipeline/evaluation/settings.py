"""Settings of the evaluation stage: which items (``EvalSetSettings``, the ``eval_sets`` asset) and
how they are answered and scored (``EvalSettings``, ``eval_scores``)."""

import pydantic

from ptr_pipeline.answers import EXTRACTIONS
from ptr_pipeline.conversation import check_refine_turn
from ptr_pipeline.engines import Backend, Sampling
from ptr_pipeline.evaluation.tasks import TASKS, EvalExample, load_examples
from ptr_pipeline.models import check_source
from ptr_pipeline.samples import WORLD_EVAL_SOURCES


def _known(name: str, tasks) -> None:
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"{name}: unknown task(s) {unknown}; the tasks are {sorted(TASKS)}")


class EvalSetSettings(pydantic.BaseModel):
    """Where each task's items come from: the one place eval sources are configured. The
    ``eval_sets`` asset reads them; evaluation and the query pool's decontamination both use
    what it wrote."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    eval_sources: dict[str, str] = pydantic.Field(
        default_factory=lambda: dict(WORLD_EVAL_SOURCES),
        description="task -> file or folder (HF hub schema, hub data/ layout, save_to_disk, or the "
        "original release format), hf: name, 'world' (the miniature world's held-out set) or "
        "'bundled' (a general sample, the default for a task not listed)",
    )
    eval_splits: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="task -> split of a folder source; default: its only split",
    )
    max_examples: int | None = pydantic.Field(
        None, ge=1, description="first N examples of each task; null = all"
    )
    num_fewshot: dict[str, int] = pydantic.Field(
        default_factory=dict,
        description="task -> solved examples before each question; default: the task's own "
        "(mmlu 5, from its dev split; 0 elsewhere)",
    )
    fewshot_sources: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="task -> where few-shot examples come from (e.g. MMLU's dev split); "
        "default: the bundled sample's",
    )
    fewshot_splits: dict[str, str] = pydantic.Field(
        default_factory=dict, description="task -> split of a folder few-shot source"
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> "EvalSetSettings":
        for name in (
            "eval_sources",
            "eval_splits",
            "num_fewshot",
            "fewshot_sources",
            "fewshot_splits",
        ):
            _known(name, getattr(self, name))
        for name in ("eval_sources", "fewshot_sources"):
            for task, source in getattr(self, name).items():
                try:
                    check_source(source)
                except ValueError as e:
                    raise ValueError(f"{name}.{task}: {e}") from None
        orphans = sorted(set(self.eval_splits) - set(self.eval_sources))
        if orphans:
            raise ValueError(
                f"eval_splits: {orphans} have no eval_sources entry (the bundled samples have no splits)"
            )
        for task, n in self.num_fewshot.items():
            if n < 0:
                raise ValueError(f"num_fewshot: {task} {n} < 0")
            if n and task == "humaneval":
                raise ValueError(
                    "num_fewshot: humaneval is zero-shot (it has no solved-example format)"
                )
        return self

    def preflight(self) -> None:
        """Read every configured task now (before any stage runs), so a malformed file fails the
        run at launch. Raises InputError naming file, row, field."""
        for task in self.eval_sources:
            self.load(task)

    def load(self, task: str) -> list[EvalExample]:
        """The examples of ``task`` as configured (see ``tasks.load_examples``).

        Raises:
            InputError: naming the file, row and field of a bad record, or an empty source.
        """
        return load_examples(
            task,
            self.eval_sources.get(task),
            self.max_examples,
            self.eval_splits.get(task),
            self.num_fewshot.get(task),
            self.fewshot_sources.get(task),
            self.fewshot_splits.get(task),
        )


class EvalSettings(pydantic.BaseModel):
    """Test-time refinement: R rounds, each round keeps the history and appends the refine prompt.
    The models scored and the items are inputs (checkpoints, ``eval_sets``), not settings."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    num_rounds: int = pydantic.Field(3, ge=1, description="refinement rounds; the paper reports 3")
    refine_turn: str | None = pydantic.Field(
        None,
        description="the user turn before rounds > 1, for every model ({query} is replaced by "
        "the item's prompt). null = the turn the checkpoints were trained with (their "
        "manifests; set by strong_refinements.refine_turn), so a model is tested as it was "
        "trained; set it only to test another turn (the paper's prompt robustness, Table 2)",
    )
    extraction: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="task -> 'strict' or 'flexible' answer extraction; default: the task's own "
        "(gsm8k strict, as the paper; flexible elsewhere). gsm8k reports both either way",
    )
    backend: Backend = "transformers"
    max_new_tokens: int = pydantic.Field(64, ge=1)
    batch_size: int = pydantic.Field(64, ge=1)
    tensor_parallel_size: int = pydantic.Field(1, ge=1, description="vllm only")
    gpu_memory_utilization: float = pydantic.Field(0.85, gt=0.0, le=1.0, description="vllm only")

    @pydantic.field_validator("refine_turn")
    @classmethod
    def _refine_turn(cls, template: str | None) -> str | None:
        return None if template is None else check_refine_turn(template)

    @pydantic.model_validator(mode="after")
    def _check(self) -> "EvalSettings":
        _known("extraction", self.extraction)
        for task, how in self.extraction.items():
            if how not in EXTRACTIONS:
                raise ValueError(f"extraction: {task} {how!r}; use one of {list(EXTRACTIONS)}")
        return self

    def extraction_for(self, task: str) -> str:
        return self.extraction.get(task, TASKS[task].extraction)

    def sampling(self, task: str | None = None) -> Sampling:
        # Greedy, as the paper's evaluation; generation stops where the task's scoring cuts.
        stop = TASKS[task].stop if task else ()
        return Sampling(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens, stop=stop)
