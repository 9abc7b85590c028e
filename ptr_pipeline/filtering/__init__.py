"""Consistency filtering: keep rows whose thought -> answer progression is coherent."""

from ptr_pipeline.filtering.consistency import (
    CODE_VERSION,
    FilterResult,
    NothingKeptError,
    assemble_progressions,
    dataset_problems,
    filter_consistent,
    judge_progressions,
)
from ptr_pipeline.filtering.settings import DEFAULT_THRESHOLDS, REASONS, FilterSettings
