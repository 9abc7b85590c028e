"""Query pool: load, clean, deduplicate, decontaminate and sample general-domain instructions."""

from ptr_pipeline.queries.pool import CODE_VERSION, build_query_pool, dedup_key
from ptr_pipeline.queries.settings import QueryPoolSettings
