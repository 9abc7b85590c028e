"""The world's data files, written where the stages read them: held-out eval sets in the hub
schemas, a query pool drawn from problems disjoint from them, and ordinary SFT pairs (a question
and its right solution, WizardLM's ``question``/``output`` layout) for ``consistency_filter``'s
``sft_source``, drawn from a stream of their own, never a held-out problem.

Regenerate the bundled copies (deterministic): ``python -m ptr_pipeline.world.data``.
"""

import json
from pathlib import Path

from ptr_pipeline.samples import WORLD_DIR
from ptr_pipeline.world import tasks
from ptr_pipeline.world.corpus import prompt_of
from ptr_pipeline.world.recipe import WorldRecipe


def world_files(recipe: WorldRecipe) -> dict[str, list[dict]]:
    """file name -> rows: ``<task>.jsonl`` eval sets, ``queries.jsonl`` (``query``, ``task``) and
    ``sft.jsonl`` (``question``, ``output``; as many as the pool's queries)."""
    split = tasks.eval_split(recipe.seed, recipe.eval_items, recipe.operands)
    files = {f"{task}.jsonl": rows for task, rows in split.eval_rows.items()}
    files["queries.jsonl"] = [
        {"query": prompt_of(item.task, item.row, i), "task": item.task}
        for i, item in enumerate(
            tasks.train_rows(split, "pool", recipe.pool_queries, recipe.seed, recipe.operands)
        )
    ]
    files["sft.jsonl"] = [
        {
            "question": prompt_of(item.task, item.row, i),
            "output": tasks.response(item.task, item.row, *item.problem.steps()),
        }
        for i, item in enumerate(
            tasks.train_rows(split, "sft", recipe.pool_queries, recipe.seed, recipe.operands)
        )
    ]
    return files


def write(folder: Path, recipe: WorldRecipe) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in world_files(recipe).items():
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    write(WORLD_DIR, WorldRecipe())
    print(f"wrote {sorted(p.name for p in WORLD_DIR.iterdir())} to {WORLD_DIR}")  # noqa: T201
