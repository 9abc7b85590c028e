"""Consistency filtering: keep rows whose thought -> answer progression is coherent."""

from ptr_pipeline.filtering.consistency import (
    CODE_VERSION,
    FilterResult,
    NothingKeptError,
    assemble_progressions,
    dataset_problems,
    filter_consistent,
    lexical_similarity,
)
from ptr_pipeline.filtering.settings import FilterSettings
