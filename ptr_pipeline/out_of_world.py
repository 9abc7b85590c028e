"""One line when the miniature world's models meet queries that are not the world's.

The world's models (``world:weak/base/strong``, the default of the ``models`` op, and checkpoints
fine-tuned from them) learned two prompts only: the world's GSM8K and ARC renderings of a 2-digit
addition. Anything else (one's own general questions, a real benchmark) gets babble, which the
consistency filter then partly keeps. Nothing fails, so this says so once: at launch (the run
guard, ``ptr_pipeline.defs.runs``) and in ``python -m ptr_pipeline refine``.

What counts as the world's:

- a query source or eval source: the setting ``world``, or the world's bundled file itself
  (``samples/world/``). For a task the world has no set for, ``bundled`` is what every run
  evaluates anyway (the demo's eight other tasks, at chance), so only a source of one's own counts;
- a question: the text of one of the world's eval prompts with its numbers changed (the prompts
  are rendered by the eval tasks from the world's bundled sets, so they follow any change there).
"""

import functools
import json
import re
from pathlib import Path

from ptr_pipeline.models import WORLD_PREFIX

REAL_MODELS = "ptr_pipeline/configs/gpu_qwen2.yaml"  # the configuration with real models


@functools.cache
def _world_prompts() -> tuple[re.Pattern, ...]:
    """One pattern per world task: its first held-out prompt, any number where a number is."""
    from ptr_pipeline.evaluation.tasks import load_examples
    from ptr_pipeline.samples import WORLD_EVAL_SOURCES

    patterns = []
    for task in WORLD_EVAL_SOURCES:
        prompt = load_examples(task, "world", 1)[0].prompt
        parts = re.split(r"\d+", prompt)
        patterns.append(re.compile(r"\d+".join(map(re.escape, parts))))
    return tuple(patterns)


def is_world_question(text: str) -> bool:
    """Whether ``text`` is one of the world's prompts (any operands)."""
    return any(p.fullmatch(text.strip()) for p in _world_prompts())


def world_example() -> str:
    """A question in the world's format, for the line's reader."""
    from ptr_pipeline.evaluation.tasks import load_examples

    return load_examples("gsm8k", "world", 1)[0].prompt


def _is_world_file(source: str, name: str) -> bool:
    from ptr_pipeline.samples import WORLD_DIR

    try:
        return Path(source).expanduser().resolve() == (WORLD_DIR / name).resolve()
    except (OSError, RuntimeError):
        return False


def foreign_sources(query_source: str | None, eval_sources: dict[str, str] | None) -> list[str]:
    """The configured sources that are not the world's, as 'setting value' (module docstring);
    None: that stage is not in the run."""
    from ptr_pipeline.samples import WORLD_EVAL_SOURCES

    foreign = []
    if query_source is not None and not (
        query_source == "world" or _is_world_file(query_source, "queries.jsonl")
    ):
        foreign.append(f"query_pool.source {query_source!r}")
    for task, source in (eval_sources or {}).items():
        if task in WORLD_EVAL_SOURCES:
            ours = source == "world" or _is_world_file(source, f"{task}.jsonl")
        else:
            ours = source == "bundled"
        if not ours:
            foreign.append(f"eval_sets.eval_sources.{task} {source!r}")
    return foreign


def launch_note(
    models: dict[str, str], query_source: str | None, eval_sources: dict[str, str] | None
) -> str | None:
    """The one line for a run whose ``models`` (role -> setting) include world models and whose
    query or eval sources are not the world's; None when there is nothing to say."""
    world = [f"{role} {spec}" for role, spec in models.items() if spec.startswith(WORLD_PREFIX)]
    foreign = foreign_sources(query_source, eval_sources)
    if not world or not foreign:
        return None
    # the filter sees generated queries' answers; eval answers are only scored
    queries = any(f.startswith("query_pool.") for f in foreign)
    kept = ", which the filter may partly keep" if queries else ""
    return (
        f"the world's models ({', '.join(world)}) know only the world's addition prompts, and "
        f"{', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not the world's: expect "
        f"babble{kept}; real models: {REAL_MODELS}"
    )


def world_origin(spec: str, model: str) -> str | None:
    """The world model that ``model`` is or was fine-tuned from (e.g. ``world:base``), from the
    setting or the folder's manifest; None for any other model."""
    from ptr_pipeline.storage import CHECKPOINT_MANIFEST

    if spec.startswith(WORLD_PREFIX):
        return spec
    manifest = Path(model) / CHECKPOINT_MANIFEST
    if not manifest.is_file():
        return None
    try:
        content = json.loads(manifest.read_text())
    except ValueError:
        return None
    if content.get("world_role"):
        return f"{WORLD_PREFIX}{content['world_role']}"
    base = str(content.get("base_model") or "")
    return base if base.startswith(WORLD_PREFIX) else None


def refine_note(spec: str, model: str, questions: list[str]) -> str | None:
    """The one line for ``refine`` when a world model answers questions not in the world's
    format; None when the model is not the world's or every question is."""
    origin = world_origin(spec, model)
    if origin is None:
        return None
    outside = [i for i, q in enumerate(questions, start=1) if not is_world_question(q)]
    if not outside:
        return None
    which = spec if spec == origin else f"{spec} (fine-tuned from {origin})"
    return (
        f"note: {which} knows only the world's addition prompts, e.g. {world_example()!r}, "
        f"and {len(outside)} of {len(questions)} question(s) are not one (the first: question "
        f"{outside[0]}): expect babble; --task gsm8k or arc asks a world file as evaluation "
        f"does; real models: {REAL_MODELS}"
    )
