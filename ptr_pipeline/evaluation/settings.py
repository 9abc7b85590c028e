"""Settings of the evaluation stage."""

import pydantic

from ptr_pipeline.conversation import REFINE_PROMPT
from ptr_pipeline.engines import Backend, Sampling
from ptr_pipeline.evaluation.tasks import TASKS, load_examples
from ptr_pipeline.models import check_source
from ptr_pipeline.samples import WORLD_EVAL_SOURCES


class EvalSettings(pydantic.BaseModel):
    """Test-time refinement: R rounds, each round keeps the history and appends the refine prompt.
    The models scored are inputs (base, SFT and PTR checkpoints), not settings."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    num_rounds: int = pydantic.Field(3, ge=1, description="refinement rounds; the paper reports 3")
    refine_prompt: str = pydantic.Field(REFINE_PROMPT, description="user turn before rounds > 1")
    max_examples: int | None = pydantic.Field(
        None, ge=1, description="first N examples of each task; null = all"
    )
    eval_sources: dict[str, str] = pydantic.Field(
        default_factory=lambda: dict(WORLD_EVAL_SOURCES),
        description="task -> file or folder (HF hub schema or the original release format), "
        "hf: name, 'world' (the miniature world's held-out set) or 'bundled' (a general sample, "
        "the default for a task not listed)",
    )
    eval_splits: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="task -> split of a folder source; default: its only split",
    )
    backend: Backend = "transformers"
    max_new_tokens: int = pydantic.Field(64, ge=1)
    batch_size: int = pydantic.Field(64, ge=1)
    tensor_parallel_size: int = pydantic.Field(1, ge=1, description="vllm only")
    gpu_memory_utilization: float = pydantic.Field(0.85, gt=0.0, le=1.0, description="vllm only")

    @pydantic.model_validator(mode="after")
    def _known_tasks_and_sources(self) -> "EvalSettings":
        for name, mapping in (
            ("eval_sources", self.eval_sources),
            ("eval_splits", self.eval_splits),
        ):
            unknown = sorted(set(mapping) - set(TASKS))
            if unknown:
                raise ValueError(
                    f"{name}: unknown task(s) {unknown}; the tasks are {sorted(TASKS)}"
                )
        for source in self.eval_sources.values():
            check_source(source)
        orphans = sorted(set(self.eval_splits) - set(self.eval_sources))
        if orphans:
            raise ValueError(
                f"eval_splits: {orphans} have no eval_sources entry (the bundled samples have no splits)"
            )
        return self

    def preflight(self) -> None:
        """Read every configured eval source now (before any stage runs), so a malformed file
        fails the run at launch, not after training. Raises InputError naming file, row, field."""
        for task, source in self.eval_sources.items():
            load_examples(task, source, self.max_examples, self.eval_splits.get(task))

    def sampling(self) -> Sampling:
        # Greedy, as the paper's evaluation.
        return Sampling(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens)
