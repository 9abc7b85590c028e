"""The Dagster CLI, as CI and users run it, against a temporary SQLite instance."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")


def _run(
    args: list[str], home, tmp_path, config: dict | None = None
) -> subprocess.CompletedProcess:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    if config is not None:
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
        args = [*args, "-c", str(tmp_path / "run.yaml")]
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "PTR_HOME": str(home.root)}
    return subprocess.run(
        [DAGSTER, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


def test_definitions_validate(home, tmp_path):
    proc = _run(["definitions", "validate", "-w", str(REPO / "workspace.yaml")], home, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_job_execute_dataset_rebuild(home, tmp_path):
    config = {
        "ops": {
            "query_pool": {"config": {"max_queries": 4}},
            "weak_thoughts": {"config": {"max_new_tokens": 8}},
            "strong_refinements": {"config": {"max_new_tokens": 8}},
        }
    }
    proc = _run(
        ["job", "execute", "-m", "ptr_pipeline.definitions", "-j", "dataset_rebuild_job"],
        home,
        tmp_path,
        config,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pq.read_metadata(home.artifacts / "ptr_dataset" / "latest.parquet").num_rows > 0
    assert pq.read_metadata(home.artifacts / "query_pool" / "latest.parquet").num_rows == 4
    assert not (home.artifacts / "ptr_checkpoint").exists()  # the data stages only
    assert list((tmp_path / "dagster_home").glob("**/*.db"))  # a persistent SQLite instance


@pytest.mark.slow
def test_job_execute_fails_clearly_on_bad_input(home, tmp_path):
    config = {"ops": {"query_pool": {"config": {"source": str(tmp_path / "missing.jsonl")}}}}
    proc = _run(
        ["job", "execute", "-m", "ptr_pipeline.definitions", "-j", "dataset_rebuild_job"],
        home,
        tmp_path,
        config,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    # The short console: one line with the cause, the trace once, one line for the run.
    assert "query_pool FAILED: ptr_pipeline.records.InputError: " in output
    assert f"{tmp_path / 'missing.jsonl'}: not found" in output
    assert output.count("Traceback") + output.count("Stack Trace") <= 1
    assert "run failed:" in output
