"""Query pool: load, clean, decontaminate, deduplicate (exact and near) and sample instructions."""

from ptr_pipeline.queries.pool import CODE_VERSION, PoolResult, build_query_pool, dedup_key
from ptr_pipeline.queries.settings import QueryPoolSettings
