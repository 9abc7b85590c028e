"""The code location: every module under ``ptr_pipeline/defs`` is loaded and merged.

dagster job execute -m ptr_pipeline.definitions -j ptr_full_job
dagster dev -w workspace.yaml
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
