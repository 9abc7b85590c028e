"""Schedules: the nightly dataset rebuild (stopped until someone turns it on)."""

import dagster as dg

from ptr_pipeline.defs.jobs import dataset_rebuild_job

nightly_dataset_rebuild_schedule = dg.ScheduleDefinition(
    name="nightly_dataset_rebuild_schedule",
    job=dataset_rebuild_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
