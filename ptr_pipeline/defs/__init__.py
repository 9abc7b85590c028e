"""The Dagster layer: every module here is autoloaded by ``ptr_pipeline.definitions``.

This is the only package that imports Dagster. It wires the plain-Python stages into assets,
resources, IO managers, checks, jobs and schedules, and holds no logic a test would want without
Dagster.
"""
