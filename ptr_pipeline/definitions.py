"""The code location: every module under ``ptr_pipeline/defs`` is loaded and merged, once per
process (a module-level ``Definitions``: the CLI and the webserver load it several times per
command, and each reload cost about 0.1 s).

dagster job execute -m ptr_pipeline.definitions -j ptr_full_job
dagster dev -w workspace.yaml
"""

from pathlib import Path

import dagster as dg


def build_defs() -> dg.Definitions:
    """The definitions, built now (resources read $PTR_HOME at this moment)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


defs = build_defs()
