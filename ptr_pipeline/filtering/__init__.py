"""Consistency filtering: keep rows whose thought -> answer progression is coherent."""

from ptr_pipeline.filtering.consistency import (
    CODE_VERSION,
    FilterResult,
    NothingKeptError,
    dataset_problems,
    filter_consistent,
    iter_progressions,
    judge_progressions,
)
from ptr_pipeline.filtering.settings import DEFAULT_THRESHOLDS, REASONS, FilterSettings
