"""The Dagster CLI, as CI and users run it, against a temporary SQLite instance."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")


TINY = {"weak": "tiny:weak", "base": "tiny:base", "strong": "tiny:strong"}
# Random tiny models: greedy decoding ends at once (empty answers) and their noise fails the
# default filter, so jobs sample the strong model and keep every progression.
PLUMBING = {
    "models": TINY,
    "strong_refinements": {"temperature": 0.7},
    "consistency_filter": {"rules": ["empty_step"]},
}


def _command(args: list[str], home, tmp_path, config: dict | None = None, name: str = "run"):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    shutil.copy(REPO / "instance" / "dagster.yaml", dagster_home / "dagster.yaml")
    if "-j" in args:  # jobs hold the models: the random tiny ones (plumbing; the world is slow),
        # whose noise the default filter would drop
        config = {**(config or {})}
        ops = {k: {"config": dict(v.get("config", {}))} for k, v in config.get("ops", {}).items()}
        for op, defaults in PLUMBING.items():  # the test's own settings win
            entry = ops.setdefault(op, {"config": {}})
            entry["config"] = {**defaults, **entry["config"]}
        config["ops"] = ops
    if config is not None:
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        args = [*args, "-c", str(tmp_path / f"{name}.yaml")]
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "PTR_HOME": str(home.root)}
    # This checkout's code (also the run launcher dagster.yaml names), wherever the venv's
    # editable install points (a git worktree shares the main checkout's venv).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return [DAGSTER, *args], env


def _run(
    args: list[str], home, tmp_path, config: dict | None = None
) -> subprocess.CompletedProcess:
    argv, env = _command(args, home, tmp_path, config)
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _rebuild(home, tmp_path, config: dict) -> subprocess.CompletedProcess:
    """`dagster job execute` of dataset_rebuild_job with ``config``."""
    args = ["job", "execute", "-m", "ptr_pipeline.definitions", "-j", "dataset_rebuild_job"]
    return _run(args, home, tmp_path, config)


def _instance(tmp_path):
    import dagster as dg

    return dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))


def _home(tmp_path):
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    shutil.copy(REPO / "instance" / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    return tmp_path


def _processes_of(run_id: str) -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("PTR_RUN_ID") == run_id:
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def test_definitions_validate(home, tmp_path):
    proc = _run(["definitions", "validate", "-w", str(REPO / "workspace.yaml")], home, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _makefile_warnings_filter() -> str:
    """The warnings filter the Makefile exports (PYTHONWARNINGS) for the dagster CLI's notice."""
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("DAGSTER_CLI_NOTICE :="):
            return line.split(":=", 1)[1].strip()
    raise AssertionError("the Makefile sets no DAGSTER_CLI_NOTICE")


def test_the_cli_superseded_notice_is_dropped_and_other_warnings_are_not(home, tmp_path):
    """`dagster job execute` warns that it is superseded by dg; the Makefile's PYTHONWARNINGS
    drops that notice alone: the run still prints its console, and a FutureWarning from anywhere
    else still shows."""
    argv, env = _command(["job", "execute", "-m", "ptr_pipeline.definitions"], home, tmp_path)
    env.pop("PYTHONWARNINGS", None)  # make test exports the filter: the control runs without
    bare = subprocess.run(
        [*argv, "-j", "no_such_job"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert "SupersessionWarning: Function `job_execute_command` is superseded" in bare.stderr

    env["PYTHONWARNINGS"] = _makefile_warnings_filter()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"ops": {"models": {"config": TINY}}}))
    proc = subprocess.run(
        [*argv, "-j", "models_job", "-c", str(tmp_path / "tiny.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "superseded" not in proc.stderr + proc.stdout
    assert " models done (" in proc.stderr  # the run's own console
    other = subprocess.run(
        [sys.executable, "-c", "import warnings; warnings.warn('mine', FutureWarning)"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert "FutureWarning: mine" in other.stderr


@pytest.mark.slow
def test_job_execute_dataset_rebuild(home, tmp_path):
    config = {
        "ops": {
            "query_pool": {"config": {"max_queries": 4}},
            "weak_thoughts": {"config": {"max_new_tokens": 8}},
            "strong_refinements": {"config": {"max_new_tokens": 8}},
        }
    }
    proc = _rebuild(home, tmp_path, config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pq.read_metadata(home.artifacts / "ptr_dataset" / "latest.parquet").num_rows > 0
    assert pq.read_metadata(home.artifacts / "query_pool" / "latest.parquet").num_rows == 4
    assert not (home.artifacts / "ptr_checkpoint").exists()  # the data stages only
    assert list((tmp_path / "dagster_home").glob("**/*.db"))  # a persistent SQLite instance


@pytest.mark.slow
def test_job_execute_fails_clearly_on_bad_input(home, tmp_path):
    """A missing or empty file is refused with the config, before any stage (the run guard reads
    the source); one that only the stage can judge (every query leaks an eval item) fails that
    stage, with its cause on one line and the trace once."""
    config = {"ops": {"query_pool": {"config": {"source": str(tmp_path / "missing.jsonl")}}}}
    proc = _rebuild(home, tmp_path, config)
    assert proc.returncode != 0
    assert (
        f"ops.query_pool.config: Value error, {tmp_path / 'missing.jsonl'}: not found"
        in proc.stderr
    )

    (tmp_path / "empty.jsonl").write_text("\n\n")
    config = {"ops": {"query_pool": {"config": {"source": str(tmp_path / "empty.jsonl")}}}}
    proc = _rebuild(home, tmp_path, config)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        f"nothing was run: ops.query_pool.config: {tmp_path / 'empty.jsonl'}: no records" in output
    )
    assert "query_pool FAILED" not in output  # refused at launch, not by the stage

    # Only the stage can tell that every query is an eval question (decontamination, 3-grams)
    leaked = "".join(f'{{"query": "What is {a} + {b}?"}}\n' for a, b in ((30, 33), (43, 92)))
    (tmp_path / "leaked.jsonl").write_text(leaked)  # the world's first two gsm8k eval items
    pool = {"source": str(tmp_path / "leaked.jsonl"), "decontaminate_ngram": 3}
    proc = _rebuild(home, tmp_path, {"ops": {"query_pool": {"config": pool}}})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        f"query_pool FAILED: ptr_pipeline.records.InputError: {tmp_path / 'leaked.jsonl'}: no query "
        "survives cleaning (2 records; dropped {'contaminated': 2})" in output
    )
    assert output.count("in build_query_pool") == 1  # the raising frame: one trace
    assert output.count("run failed:") == 1
    assert not (home.artifacts / "query_pool").exists()  # nothing was written


@pytest.mark.slow
def test_a_chained_input_error_names_file_and_row_on_the_console(home, tmp_path):
    """InputError raised from a UnicodeDecodeError, found by the run guard at launch: the console
    shows the InputError's file, row and byte, not the decoder's error."""
    (tmp_path / "latin1.jsonl").write_bytes(b'{"query": "fine query"}\n{"query": "caf\xe9"}\n')
    config = {"ops": {"query_pool": {"config": {"source": str(tmp_path / "latin1.jsonl")}}}}
    proc = _rebuild(home, tmp_path, config)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "nothing was run: ops.query_pool.config: " in output
    assert "latin1.jsonl row 2: not valid UTF-8 (byte 0xe9)" in output
    assert "UnicodeDecodeError" not in output


@pytest.mark.slow
def test_out_of_range_settings_fail_before_any_stage_runs(home, tmp_path):
    config = {
        "ops": {
            "strong_refinements": {"config": {"num_rounds": 0}},
            "weak_thoughts": {"config": {"temperature": -1}},
            "consistency_filter": {"config": {"min_step_similarity": 7}},
        }
    }
    proc = _rebuild(home, tmp_path, config)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for field in (
        "ops.strong_refinements.config.num_rounds: Input should be greater than or equal to 1 (got 0)",
        "ops.weak_thoughts.config.temperature: Input should be greater than or equal to 0 (got -1)",
        "ops.consistency_filter.config.min_step_similarity: Input should be less than or equal to 1",
    ):
        assert field in output
    assert not (home.artifacts / "query_pool").exists()  # no stage ran, not even the first


def test_world_models_with_other_queries_are_named_in_one_line_at_launch(home, tmp_path):
    """The default world models and the general query sample: one warning line from the run
    guard, before any step (here the run is then refused for a bad setting, so nothing runs)."""
    world = {"weak": "world:weak", "base": "world:base", "strong": "world:strong"}
    config = {
        "ops": {
            "models": {"config": world},
            "query_pool": {"config": {"source": "bundled"}},
            "strong_refinements": {"config": {"num_rounds": 0}},
        }
    }
    proc = _rebuild(home, tmp_path, config)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "know only the world's" in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "query_pool.source 'bundled' is not the world's" in lines[0]
    assert lines[0].endswith("real models: ptr_pipeline/configs/gpu_qwen2.yaml")
    assert "ops.strong_refinements.config.num_rounds" in proc.stderr
    assert not list(home.models.glob("world-*")) and not (home.artifacts / "query_pool").exists()

    config["ops"]["query_pool"]["config"]["source"] = "world"  # the world's own: nothing said
    proc = _rebuild(home, tmp_path, config)
    assert proc.returncode != 0 and "know only the world's" not in proc.stderr


SLOW_WEAK_STEP = {
    "ops": {
        "query_pool": {"config": {"max_queries": 24}},
        "weak_thoughts": {"config": {"max_new_tokens": 1500, "num_thoughts": 4, "seed": 7}},
    }
}


def _start_and_kill(home, tmp_path, name: str, multiprocess: bool = False) -> str:
    """Start a dataset rebuild, wait until its weak_thoughts step holds the gpu pool slot, then
    kill -9 the run: its whole process group, or with one process per step, the run's own process
    alone (its step process lives on). Returns the run id."""
    import dagster as dg

    config = dict(SLOW_WEAK_STEP)
    if multiprocess:
        config["execution"] = {"config": {"multiprocess": {}}}
    with _instance(_home(tmp_path)):  # create the storage before two processes open it at once
        pass
    argv, env = _command(
        ["job", "execute", "-m", "ptr_pipeline.definitions", "-j", "dataset_rebuild_job"],
        home, tmp_path, config, name,
    )  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    with _instance(tmp_path) as instance:
        while time.monotonic() < deadline:
            runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            info = instance.event_log_storage.get_concurrency_info("gpu")
            if runs and info.claimed_slots:
                break
            time.sleep(0.5)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the run never claimed the gpu pool slot")
        if multiprocess:
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        run = instance.get_run_by_id(runs[0].run_id)
        assert run.status == dg.DagsterRunStatus.STARTED  # killed: nobody marked it
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        return run.run_id


def _monitor(instance) -> None:
    """One pass of Dagster's run monitoring over the started runs, as its daemon makes every
    poll_interval_seconds: the instance's run launcher checks each run's worker."""
    import logging

    import dagster as dg
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
    for record in instance.get_run_records(filters=started):
        monitor_started_run(instance, None, record, logging.getLogger("run_monitoring"))


def _wait_for_failure(instance, run_id: str, seconds: float) -> float:
    import dagster as dg

    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE:
            return time.monotonic() - started
        time.sleep(0.5)
    pytest.fail(f"run {run_id} still {instance.get_run_by_id(run_id).status} after {seconds} s")


@pytest.mark.slow
def test_a_killed_run_is_failed_and_its_pool_slot_freed(home, tmp_path):
    import dagster as dg

    # Under the daemon (make dev): Dagster's run monitoring, through the instance's launcher
    # (PtrRunLauncher), fails it; polled every 2 s here (every 60 s in dagster.yaml).
    killed = _start_and_kill(home, tmp_path, "first")
    config = yaml.safe_load((tmp_path / "dagster_home" / "dagster.yaml").read_text())
    assert config["run_launcher"]["class"] == "PtrRunLauncher"
    config["run_monitoring"]["poll_interval_seconds"] = 2
    (tmp_path / "dagster_home" / "dagster.yaml").write_text(yaml.safe_dump(config))
    _, env = _command([], home, tmp_path)
    daemon = subprocess.Popen(
        [str(Path(DAGSTER).parent / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with _instance(tmp_path) as instance:
            _wait_for_failure(instance, killed, 90)
            assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
            failure = instance.all_logs(killed, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert "is gone, killed or crashed" in failure[-1].message
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()

    # With the bare CLI: the next run reaps it before its first step, and is not blocked.
    killed = _start_and_kill(home, tmp_path, "second")
    started = time.monotonic()
    proc = _run(
        ["job", "execute", "-m", "ptr_pipeline.definitions", "-j", "dataset_rebuild_job"],
        home,
        tmp_path,
        {"ops": {"query_pool": {"config": {"max_queries": 4}}}},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - started < 60
    with _instance(tmp_path) as instance:
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE

    # One process per step: the killed run's step process lives on, holding the model; the health
    # check kills it before the run is marked failed.
    killed = _start_and_kill(home, tmp_path, "third", multiprocess=True)
    assert _processes_of(killed)  # the orphaned step process
    with _instance(tmp_path) as instance:
        _monitor(instance)
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
    assert _processes_of(killed) == []


def test_the_health_check_leaves_live_and_unknown_runs_alone(tmp_path):
    """A run whose worker is alive, one of another host, one not yet in its executor: RUNNING."""
    import dagster as dg
    from dagster._core.launcher import WorkerStatus

    from ptr_pipeline.defs.runs import HOST_TAG, PID_TAG, START_TAG, _process_started

    with _instance(_home(tmp_path)) as instance:
        launcher = instance.run_launcher
        me, host = os.getpid(), socket.gethostname()
        cases = {
            "alive": {PID_TAG: str(me), START_TAG: _process_started(me), HOST_TAG: host},
            "elsewhere": {PID_TAG: "1", START_TAG: "0.00", HOST_TAG: "another-host"},
            "untagged": {},
        }
        for name, tags in cases.items():
            run = instance.create_run_for_job(dg.GraphDefinition(name="g").to_job(), tags=tags)
            assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING, name


@pytest.mark.slow
def test_asset_materialize_reads_every_task_from_the_layouts_users_have(home, tmp_path):
    """eval_sets (all ten tasks) in one CLI run, each task from another layout: a hub Parquet
    folder, a save_to_disk folder, JSON, a CSV with GPQA's column names, JSONL."""
    import json

    import datasets
    import pyarrow as pa

    from ptr_pipeline.evaluation import TASKS
    from ptr_pipeline.samples import eval_sample

    def rows(task):
        return [json.loads(line) for line in eval_sample(task).read_text().splitlines()[:4]]

    data = tmp_path / "data"
    (data / "arc" / "ARC-Easy").mkdir(parents=True)  # the hub's ai2_arc: two configs, one set
    (data / "arc" / "ARC-Challenge").mkdir()
    arc = rows("arc")
    pq.write_table(pa.Table.from_pylist(arc[:2]), data / "arc/ARC-Easy/test-00000-of-00001.parquet")
    pq.write_table(
        pa.Table.from_pylist(arc[2:]), data / "arc/ARC-Challenge/test-00000-of-00001.parquet"
    )
    datasets.Dataset.from_list(rows("drop")).save_to_disk(str(data / "drop"))
    (data / "xsum.json").write_text(json.dumps(rows("xsum")))
    gpqa = rows("gpqa")
    with (data / "gpqa_diamond.csv").open("w", newline="") as f:
        import csv

        writer = csv.DictWriter(f, fieldnames=list(gpqa[0]))
        writer.writeheader()
        writer.writerows(gpqa)
    (data / "humaneval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows("humaneval")))
    sources = {
        "arc": str(data / "arc"), "drop": str(data / "drop"), "xsum": str(data / "xsum.json"),
        "gpqa": str(data / "gpqa_diamond.csv"), "humaneval": str(data / "humaneval.jsonl"),
    }  # fmt: skip
    config = {"ops": {"eval_sets": {"config": {"eval_sources": sources, "max_examples": 4}}}}
    args = ["asset", "materialize", "-m", "ptr_pipeline.definitions", "--select", "eval_sets"]
    proc = _run(args, home, tmp_path, config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pq.read_table(home.artifacts / "eval_sets" / "latest.parquet").to_pylist()
    for task in TASKS:
        items = [r for r in table if r["task"] == task]
        assert len(items) == 4, task
        where = items[0]["where"]
        assert where.startswith(sources[task]) if task in sources else "samples" in where
    arc_ids = [r["example_id"] for r in table if r["task"] == "arc"]
    assert arc_ids == [r["id"] for r in arc[2:] + arc[:2]]
    # An unknown task, or a source that does not exist, is refused before anything runs.
    bad = {"ops": {"eval_sets": {"config": {"eval_sources": {"hellaswag": str(data / "x.jsonl")}}}}}
    proc = _run(args, home, tmp_path, bad)
    assert proc.returncode != 0
    assert (
        "eval_sources: unknown task(s) ['hellaswag']; the tasks are ['arc',"
        in proc.stderr + proc.stdout
    )
