"""Settings of the consistency filter. Defaults are calibrated on the labelled progressions
(``ptr_pipeline_tests/filtering/progressions.jsonl``; ``benchmarks/filter_quality.py`` prints the
precision and recall they give, and the README quotes them)."""

import pydantic

from ptr_pipeline.filtering.measures import embedding_model_problem
from ptr_pipeline.models import check_source

# The rules, in the order they are tried (filtering/consistency.py documents each).
REASONS = (
    "empty_step",
    "truncated_step",
    "answer_too_short",
    "repetitive",
    "off_topic",
    "incoherent_step",
    "unchanged_answer",
    "self_inconsistent",
)

# Calibrated per measure: a TF-IDF cosine and an embedding cosine live on different scales.
# A threshold left null takes its measure's value from here.
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "lexical": {"min_step_similarity": 0.02, "min_query_similarity": 0.05, "agree_similarity": 0.5},
    "embedding": {
        "min_step_similarity": 0.03,
        "min_query_similarity": 0.15,
        "agree_similarity": 0.8,
    },
}


class FilterSettings(pydantic.BaseModel):
    """Rules and thresholds of the consistency filter (see filtering/consistency.py)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    rules: list[str] = pydantic.Field(
        default_factory=lambda: list(REASONS),
        description="the rules that may drop a row, by name (every row is scored either way): "
        + ", ".join(REASONS)
        + "; [] keeps every row",
    )

    embedding_model: str | None = pydantic.Field(
        None,
        description="sentence-transformers model for every similarity (a hub id such as "
        "sentence-transformers/all-MiniLM-L6-v2, read from the local cache, or a folder; needs "
        "the embeddings extra); null = the lexical measure (TF-IDF cosine, script-aware)",
    )
    embedding_device: str = pydantic.Field("cpu", description="where the embedding model runs")
    min_step_similarity: float | None = pydantic.Field(
        None,
        ge=0.0,
        le=1.0,
        description="incoherent_step: every step's similarity to the step before it; null = the "
        "measure's calibrated default (filtering.settings.DEFAULT_THRESHOLDS)",
    )
    min_query_similarity: float | None = pydantic.Field(
        None,
        ge=0.0,
        le=1.0,
        description="off_topic: the answer's similarity to the query; null = calibrated default",
    )
    max_repetition: float = pydantic.Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="repetitive: share of a step's sentences or token 3-grams that repeat an "
        "earlier one (filtering.measures.repetition); 1 = off",
    )
    min_answer_chars: int = pydantic.Field(1, ge=1, description="answer_too_short below this")
    agree_similarity: float | None = pydantic.Field(
        None,
        ge=0.0,
        le=1.0,
        description="self_inconsistent: two final answers without a marked answer "
        "(answers.final_answer) agree at this similarity; null = calibrated default",
    )
    include_strong_rounds: bool = pydantic.Field(
        True, description="strong rounds before the last count as thoughts (else only weak drafts)"
    )
    batch_size: int = pydantic.Field(
        1024, ge=1, description="queries judged per batch (memory stays bounded by one batch)"
    )
    # SFT mixing (filtering/mix.py): ordinary pairs mixed into the kept rows against forgetting.
    sft_source: str | None = pydantic.Field(
        None,
        description="instruction -> response pairs to mix in (a file, a folder or hf:<name>, "
        "read like every source; e.g. WizardLM's question/output pairs); null = none",
    )
    sft_fraction: float = pydantic.Field(
        0.0, ge=0.0, lt=1.0, description="share of ptr_dataset made of SFT pairs (seeded draw)"
    )
    sft_split: str | None = pydantic.Field(None, description="split of a folder sft_source")
    sft_question_field: str = pydantic.Field(
        "auto", description="auto = instruction (+ input), question, query, prompt"
    )
    sft_answer_field: str = pydantic.Field(
        "auto", description="auto = output, response, answer, completion"
    )
    seed: int = pydantic.Field(0, description="seeds the SFT draw")

    @pydantic.field_validator("embedding_model")
    @classmethod
    def _embedding_model_here(cls, name: str | None) -> str | None:
        if name is not None and (problem := embedding_model_problem(name)):
            raise ValueError(problem)
        return name

    @pydantic.field_validator("rules")
    @classmethod
    def _known_rules(cls, rules: list[str]) -> list[str]:
        unknown = [r for r in rules if r not in REASONS]
        if unknown:
            raise ValueError(f"unknown rule(s) {unknown}; the rules are {', '.join(REASONS)}")
        return rules

    @pydantic.model_validator(mode="after")
    def _sft_mix(self) -> "FilterSettings":
        if self.sft_source is not None:
            check_source(self.sft_source)
        if (self.sft_source is None) != (self.sft_fraction == 0.0):
            raise ValueError(
                "SFT mixing needs both sft_source and sft_fraction > 0 "
                f"(got sft_source={self.sft_source!r}, sft_fraction={self.sft_fraction})"
            )
        return self

    def threshold(self, name: str, measure: str) -> float:
        """The value of threshold ``name`` for ``measure`` ("lexical" or "embedding")."""
        value = getattr(self, name)
        return DEFAULT_THRESHOLDS[measure][name] if value is None else value
