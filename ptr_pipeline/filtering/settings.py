"""Settings of the consistency filter. Defaults are the CPU demo's lenient thresholds."""

import pydantic


class FilterSettings(pydantic.BaseModel):
    """Thresholds of the consistency filter (see filtering/consistency.py for the rules)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    min_answer_chars: int = pydantic.Field(1, ge=1, description="drop shorter final answers")
    min_step_similarity: float = pydantic.Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="lexical similarity every step must share with the one before it (in the "
        "world, drafts below 0.5 had worked another problem than the question's; long real "
        "texts need a lower bar, e.g. 0.15)",
    )
    min_distinct_ratio: float = pydantic.Field(
        0.2, ge=0.0, le=1.0, description="distinct/total words of the answer; catches loops"
    )
    drop_unchanged: bool = pydantic.Field(
        False, description="drop rows whose answer repeats the last thought verbatim"
    )
    include_strong_rounds: bool = pydantic.Field(
        True, description="strong rounds before the last count as thoughts (else only weak drafts)"
    )
