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
    near_dup: bool = pydantic.Field(
        True,
        description="also drop near-duplicates: MinHash over word 3-grams (character 5-grams "
        "for text in scripts written without spaces), LSH candidates verified on their "
        "signatures; queries stating other numbers are never near-duplicates. Each cluster "
        "keeps its first query. Off: exact duplicates only",
    )
    near_dup_threshold: float = pydantic.Field(
        0.8,
        gt=0.0,
        lt=1.0,
        description="two queries are near-duplicates when the MinHash estimate of the Jaccard "
        "similarity of their shingle sets reaches this. Candidates come from LSH bands chosen "
        "as datasketch's MinHashLSH does for this threshold (128 permutations: 14 bands of 9, "
        "so a pair at 0.85 is a candidate 97% of the time, at 0.8 87%). 0.8 keeps templated "
        "instructions apart ('Explain sleep/volcanoes to a ten-year-old...': 0.71) and joins a "
        "one-word change in an instruction of 30 words or more",
    )
    near_dup_num_perm: int = pydantic.Field(
        128,
        ge=16,
        le=1024,
        description="MinHash permutations; more sharpens the threshold. Its cost is mostly fixed "
        "per query (datasketch's per-call overhead): 64 was measured no faster than 128",
    )
    decontaminate: bool = pydantic.Field(
        True,
        description="drop queries that share a word n-gram with an eval question (the eval_sets "
        "asset's items: exactly what is evaluated); off, the report still counts them",
    )
    decontaminate_ngram: int = pydantic.Field(
        8, ge=2, description="a shared word n-gram of this size marks a query as contaminated"
    )
    max_contamination_rate: float = pydantic.Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="the query_pool_contamination_rate check fails when, for some eval task, a "
        "larger share than this of the cleaned queries (non-empty, within min_chars..max_chars, "
        "duplicates counted, before dedup) match its items",
    )

    def preflight(self) -> None:
        """Read every record of the source now (the run guard calls it before any stage runs), so
        a malformed file fails the run at launch, not after the models are built. Raises
        InputError naming the file, row and field (``pool.check_queries``)."""
        from ptr_pipeline.queries.pool import check_queries  # pool imports these settings

        check_queries(self)

    @pydantic.model_validator(mode="after")
    def _check(self) -> "QueryPoolSettings":
        if self.source != "bundled":
            check_source(self.source)
        if self.min_chars > self.max_chars:
            raise ValueError(
                f"min_chars {self.min_chars} > max_chars {self.max_chars}: every query would be dropped"
            )
        return self
