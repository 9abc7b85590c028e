"""Export: ``ptr_dataset`` as a Hugging Face ``datasets`` folder with a dataset card.

The folder is what ``Dataset.save_to_disk`` writes (``datasets.load_from_disk`` reads it back;
``push_to_hub`` publishes it) plus ``README.md``: a dataset card whose YAML header is written by
``huggingface_hub.DatasetCardData`` (the hub's own card metadata class) and whose body records
where the rows came from: sources, models, settings and the filter's statistics. The licence
fields are left for the user: the rows inherit the terms of the query source and of the models'
outputs, which only the user knows.
"""

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from ptr_pipeline import schemas

CARD = "README.md"


def _size_category(n: int) -> str:
    """The hub's ``size_categories`` bucket of ``n`` rows."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):  # fmt: skip
        if n < bound:
            return name
    return "n>1M"


def generation_summary(refinements: pa.Table) -> dict[str, Any]:
    """How a ``schemas.STRONG_REFINEMENTS`` table was generated, for the card: drafts per query,
    strong rounds, each strong sampling setting once (the seed varies per shard and round), the
    self-consistency samples per answer, the strong templates."""
    rounds = refinements.column("round").to_pylist()
    last = max(rounds, default=0)
    settings = {
        json.dumps({k: v for k, v in json.loads(s).items() if k != "seed"}, sort_keys=True)
        for s in refinements.column("sampling").to_pylist()
    }
    samples = refinements.column("samples").to_pylist()
    return {
        "thoughts_per_query": sorted({len(t) for t in refinements.column("thoughts").to_pylist()}),
        "strong_rounds": last,
        "strong_sampling": [json.loads(s) for s in sorted(settings)],
        "self_consistency_samples_per_answer": sorted(
            {len(s) for s, r in zip(samples, rounds, strict=True) if r == last}
        ),
        "strong_templates": sorted(set(refinements.column("template").to_pylist())),
    }


def _turns(dataset: pa.Table) -> str:
    turns = sorted(set(dataset.column("refine_turn").to_pylist()) - {""})
    return ", ".join(json.dumps(t) for t in turns) or "none"


def card_text(dataset: pa.Table, provenance: dict[str, Any]) -> str:
    """The dataset card (markdown with a YAML header) for ``dataset``.

    Args:
        dataset: a ``schemas.PTR_DATASET`` table.
        provenance: JSON-serialisable facts to record, by section: e.g. ``sources``, ``models``,
            ``filter`` (settings, drop counts, statistics), ``sft_mix``.
    """
    from huggingface_hub import DatasetCardData

    origins = dataset.column("origin").to_pylist()
    data = DatasetCardData(
        license="unknown",  # the hub's identifier for "not stated": left for the user
        pretty_name="PTR thought-refinement dataset",
        task_categories=["text-generation"],
        size_categories=[_size_category(dataset.num_rows)],
        tags=["ptr", "progressive-thought-refinement", "self-refinement"],
    )
    sections = "\n".join(
        f"### {name}\n\n```json\n{json.dumps(value, indent=2, sort_keys=True, default=str)}\n```\n"
        for name, value in provenance.items()
    )
    return f"""---
{data.to_yaml()}
---

# PTR thought-refinement dataset

Training rows for Progressive Thought Refinement (arXiv 2410.13413), built by ptr-pipeline: a
weak model drafts thoughts for each query, a strong model refines them round by round, and a
consistency filter keeps the coherent progressions.

- rows: {dataset.num_rows} ({origins.count("ptr")} PTR progressions and {origins.count("sft")}
  SFT pairs mixed in)
- columns: `query`, `thoughts` (the drafts and earlier refinement rounds, in order), `answer`
  (the last round), `origin` (`ptr` or `sft`), `query_id`, `refine_turn`
- conversation: the query as the user turn, each thought then the answer as an assistant turn,
  and before every step after the first the user turn `refine_turn` with `{{query}}` replaced by
  the query (this dataset: {_turns(dataset)})

## Licence

Not stated (`license: unknown`). Set it above: the rows carry the terms of the query source
and of the models whose outputs they hold.

## Provenance

{sections}"""


def export_dataset(dataset: pa.Table, folder: Path, provenance: dict[str, Any]) -> Path:
    """Write ``dataset`` to ``folder`` with ``save_to_disk`` and its card (``card_text``).

    Returns:
        ``folder``, which ``datasets.load_from_disk`` reads back row for row.

    Raises:
        schemas.SchemaError: ``dataset`` is not a ``schemas.PTR_DATASET`` table.
    """
    import datasets

    datasets.disable_progress_bars()
    schemas.validate(dataset, schemas.PTR_DATASET, "ptr_dataset")
    table = dataset.select(schemas.PTR_DATASET.names).cast(schemas.PTR_DATASET)
    datasets.Dataset(table).save_to_disk(str(folder))
    (folder / CARD).write_text(card_text(table, provenance), encoding="utf-8")
    return folder
