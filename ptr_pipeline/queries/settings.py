"""Settings of the query pool stage."""

import pydantic

from ptr_pipeline.models import check_source


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
    decontaminate: bool = pydantic.Field(
        True,
        description="drop queries that share a word n-gram with an eval question (the eval_sets "
        "asset's items: exactly what is evaluated)",
    )
    decontaminate_ngram: int = pydantic.Field(
        8, ge=2, description="a shared word n-gram of this size marks a query as contaminated"
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> "QueryPoolSettings":
        if self.source != "bundled":
            check_source(self.source)
        if self.min_chars > self.max_chars:
            raise ValueError(
                f"min_chars {self.min_chars} > max_chars {self.max_chars}: every query would be dropped"
            )
        return self
