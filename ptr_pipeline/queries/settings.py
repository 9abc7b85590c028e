"""Settings of the query pool stage."""

import pydantic

from ptr_pipeline.models import check_source
from ptr_pipeline.samples import WORLD_EVAL_SOURCES


class QueryPoolSettings(pydantic.BaseModel):
    """Where the queries come from and how they are cleaned. Defaults are the CPU demo."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    source: str = pydantic.Field(
        "world",
        description="'world' (the miniature world's queries, disjoint from its eval sets), "
        "'bundled' (a general-domain sample), a .jsonl/.json/.parquet/.csv file (optionally "
        ".gz), a folder (datasets' save_to_disk, or data files in the hub's layout), or "
        "hf:<name>[:<split>] (Hugging Face datasets, from its local cache)",
    )
    split: str | None = pydantic.Field(
        None,
        description="split of a folder or DatasetDict source; null = its only split (an error lists "
        "the splits when there are several)",
    )
    text_field: str = pydantic.Field(
        "auto", description="field holding the query; auto = instruction, question, query, prompt"
    )
    input_field: str | None = pydantic.Field(
        "input",
        description="Alpaca-style context field, joined after the query with a newline when "
        "present and non-empty; null = ignore",
    )
    max_queries: int | None = pydantic.Field(
        None, ge=1, description="seeded sample of this many queries after cleaning; null = all"
    )
    seed: int = 0
    min_chars: int = pydantic.Field(8, ge=1, description="drop shorter queries")
    max_chars: int = pydantic.Field(4000, ge=1, description="drop longer queries")
    decontaminate_tasks: list[str] = pydantic.Field(
        default_factory=lambda: ["gsm8k", "arc", "mmlu"],
        description="eval tasks whose questions must not leak into the pool",
    )
    eval_sources: dict[str, str] = pydantic.Field(
        default_factory=lambda: dict(WORLD_EVAL_SOURCES),
        description="task -> file, folder, hf: name, 'world' or 'bundled' (the default for a "
        "task not listed); the eval sets as the eval stage reads them",
    )
    decontaminate_ngram: int = pydantic.Field(
        8, ge=2, description="a shared word n-gram of this size marks a query as contaminated"
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> "QueryPoolSettings":
        if self.source != "bundled":
            check_source(self.source)
        for source in self.eval_sources.values():
            check_source(source)
        if self.min_chars > self.max_chars:
            raise ValueError(
                f"min_chars {self.min_chars} > max_chars {self.max_chars}: every query would be dropped"
            )
        return self
