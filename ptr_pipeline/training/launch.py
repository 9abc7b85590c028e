"""Train in a fresh process (so GPU memory is freed after), cached by a fingerprint of the inputs.

``train_in_subprocess`` does everything that can fail cheaply before any process starts: it
tokenizes the rows with the model's ``ChatFormat`` (so a tokenizer that breaks the training =
inference rule fails here), and refuses a dataset too small for the ranks and micro-batch. Then it
runs ``python -m ptr_pipeline.training.train`` (one rank, with the single-process rendezvous
variables DeepSpeed needs: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; without them it
looks for mpi4py) or DeepSpeed's own launcher (``deepspeed --num_gpus N --module ...``).

Caching: the checkpoint of a (dataset, settings, base model, code version) fingerprint lives in
``work_dir/<key16>/`` and is reused while its manifest verifies, so an unchanged rerun trains 0
steps (every file hash is checked first; a damaged cache is trained again). Settings that cannot
change the weights are not part of the key (``TrainSettings.result_fields``: ``save_steps``,
``save_total_limit``, ``peak_tflops``); a reused checkpoint's manifest is brought up to them.

Resume: every attempt at a key stages in ``work_dir/.staging-<key16>/`` (one process at a time:
``work_dir/.<key16>.lock``, a ``filelock`` lock). Its ``checkpoints/`` holds the resumable
checkpoints the training process writes every ``save_steps`` steps, so a rerun after a crash or a
kill resumes from the last complete one. A success renames the final checkpoint into place and
removes the staging folder, and those of other inputs no process is training now (abandoned
attempts); a failure keeps its own, with each rank's error in ``errors/``.

DeepSpeed compiles its CPU ops into ``TORCH_EXTENSIONS_DIR``; unless set, that is a folder of this
Python environment (``<sys.prefix>/torch_extensions``), not the home cache every checkout shares.
"""

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from filelock import FileLock, Timeout  # one attempt per staging folder at a time

from ptr_pipeline.conversation import ChatFormat
from ptr_pipeline.models import model_fingerprint
from ptr_pipeline.storage import (
    CHECKPOINT_MANIFEST,
    checkpoint_problems,
    fingerprint,
    table_fingerprint,
    write_bytes_atomic,
    write_parquet_atomic,
)
from ptr_pipeline.training.settings import TrainJob, TrainSettings

log = logging.getLogger(__name__)

CODE_VERSION = "train_v4"

# DeepSpeed prints this (stdout) on every start, whether it compiled its CPU communication op now
# or loaded it from TORCH_EXTENSIONS_DIR: no news. Such lines stay in the tail a failure reports.
_NOT_NEWS = re.compile(r"DeepSpeed \S+ built successfully")


def console_line(line: str) -> bool:
    """Whether a line of the training process goes to ``on_line`` (the console)."""
    return _NOT_NEWS.fullmatch(line.strip()) is None


class TrainingFailed(RuntimeError):
    """Training could not start, or a rank failed; the message names the cause."""


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path  # a complete Hugging Face checkpoint folder (manifest verified)
    manifest: dict
    cached: bool  # True when an identical earlier training was reused (0 steps run now)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(settings: TrainSettings, job_path: Path) -> list[str]:
    """The argv that runs training for ``settings``."""
    if settings.num_gpus > 1:
        # The launcher of this interpreter's DeepSpeed, whether or not its venv is on PATH.
        return [
            sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(settings.num_gpus),
            "--master_port", str(_free_port()),
            "--module", "ptr_pipeline.training.train", "--job", str(job_path),
        ]  # fmt: skip
    return [sys.executable, "-m", "ptr_pipeline.training.train", "--job", str(job_path)]


def environment(settings: TrainSettings, device: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"  # gloo backend; no CUDA probing
    if settings.num_gpus == 1:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        env["MASTER_PORT"] = str(_free_port())
    return env


def train_in_subprocess(
    dataset: pa.Table,
    settings: TrainSettings,
    model_path: str,
    work_dir: Path,
    device: str | Callable[[], str] = "cpu",
    on_line: Callable[[str], None] = log.info,
    base_model: str | None = None,
) -> TrainResult:
    """Fine-tune ``model_path`` on ``dataset``, or reuse the identical earlier run.

    Args:
        dataset: a ``schemas.PTR_DATASET`` table.
        settings: the stage settings.
        model_path: the resolved base model (what ``from_pretrained`` loads).
        work_dir: this stage's folder for cached checkpoints and staging.
        device: "cpu" or "cuda", or a function returning it (called only when training runs, so
            a cached run never imports torch to find the device).
        on_line: receives the output lines of the training process (``console_line``: all but
            DeepSpeed's notice that its op is built).
        base_model: the model setting as written (recorded in the manifest); default model_path.

    Returns:
        The checkpoint folder, its manifest, and whether it was reused.

    Raises:
        ChatFormatError: the tokenizer cannot give training the ids inference sees.
        TrainingFailed: too few rows for the ranks and micro-batch (before launch), or a rank
            failed (its own error, not the errors of the ranks it took down).
    """
    dataset_fingerprint = table_fingerprint(dataset)
    key = fingerprint(
        dataset_fingerprint,
        settings.result_fields(),
        model_fingerprint(model_path),
        CODE_VERSION,
    )[:16]
    final = work_dir / key
    if final.exists():
        problems = checkpoint_problems(final)  # every hash: a reused checkpoint must be intact
        if not problems:
            log.info("training inputs unchanged: reusing %s", final)
            return TrainResult(final, report(final, settings), True)
        log.warning("cached checkpoint %s is damaged (%s); training again", final, problems[0])
        shutil.rmtree(final)

    # --- before launch: tokenize, count, refuse what cannot train
    # imports torch: not at Dagster load
    from ptr_pipeline.training.tokenize import dataset_refine_turn, encode_dataset

    refine_turn = dataset_refine_turn(dataset)
    encoded = encode_dataset(dataset, ChatFormat.from_pretrained(model_path), settings)
    examples, dropped = encoded.examples, encoded.dropped_too_long
    if encoded.cut_turns:
        log.warning(
            "%d supervised turns hold a stop token in their text; each is supervised up to it",
            encoded.cut_turns,
        )
    needed = settings.micro_batch_size * settings.num_gpus
    if examples.num_rows < needed:
        raise TrainingFailed(
            f"{examples.num_rows} training rows fit max_seq_len={settings.max_seq_len} "
            f"({dropped} longer rows dropped), fewer than num_gpus={settings.num_gpus} x "
            f"micro_batch_size={settings.micro_batch_size} = {needed}: lower micro_batch_size or "
            "num_gpus, raise max_seq_len, or add data"
        )
    staging = work_dir / f".staging-{key}"
    origins = pc.value_counts(dataset.column("origin")).to_pylist()
    job = TrainJob(
        settings=settings,
        base_model=base_model or model_path,
        model_path=model_path,
        examples_path=str(staging / "examples.parquet"),
        dataset_fingerprint=dataset_fingerprint,
        refine_turn=refine_turn,
        examples_dropped_too_long=dropped,
        turns_cut_at_stop_token=encoded.cut_turns,
        origin_counts={o["values"]: o["counts"] for o in origins},
        output_dir=str(staging / "checkpoint"),
        resume_dir=str(staging / "checkpoints"),
        error_dir=str(staging / "errors"),
        code_version=CODE_VERSION,
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(work_dir / f".{key}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TrainingFailed(
            f"another process is training the same inputs now ({lock.lock_file} is held)"
        ) from None
    try:
        result = _run(job, examples, staging, final, device, on_line)
        Path(lock.lock_file).unlink(missing_ok=True)  # held: no process waits on it (timeout 0)
        return result
    finally:
        lock.release()


def _run(job: TrainJob, examples: pa.Table, staging: Path, final: Path, device, on_line):
    """Stage, run (resuming from the staging folder's checkpoints) and publish; under the lock."""
    for leftover in ("checkpoint", "errors"):  # an earlier attempt's; its checkpoints/ stay
        shutil.rmtree(staging / leftover, ignore_errors=True)
    (staging / "checkpoints").mkdir(parents=True, exist_ok=True)
    resumable = sorted(p.name for p in (staging / "checkpoints").glob("step-*"))
    if resumable:
        log.info("an earlier attempt left %s: training resumes from the last", resumable)
    write_parquet_atomic(examples, staging / "examples.parquet")
    job_path = staging / "job.json"
    job_path.write_text(job.model_dump_json(indent=2))

    # --- launch
    settings = job.settings
    argv = command(settings, job_path)
    log.info(
        "starting training (%d rows, %d too long): %s",
        examples.num_rows, job.examples_dropped_too_long, " ".join(argv),
    )  # fmt: skip
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(
        argv,
        env=environment(settings, device() if callable(device) else device),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if console_line(line):
                on_line(line)
    if proc.returncode != 0:
        raise TrainingFailed(_failure(staging / "errors", proc.returncode, tail))

    # --- publish: rename into the cache, drop the staging folder
    problems = checkpoint_problems(staging / "checkpoint")
    if problems:
        raise TrainingFailed(
            "training exited 0 but left an incomplete checkpoint: " + "; ".join(problems)
        )
    if final.exists():
        shutil.rmtree(final)  # an incomplete earlier attempt
    os.rename(staging / "checkpoint", final)
    shutil.rmtree(staging)
    _remove_abandoned(final.parent)
    return TrainResult(final, report(final, job.settings), False)


def _remove_abandoned(work_dir: Path) -> None:
    """Remove the staging folders (resumable checkpoints of failed attempts) and lock files of
    the inputs no process is training now: after a success, only the inputs in training keep
    theirs, so disk use stays bounded (a rerun of an abandoned input starts from step 0)."""
    keys = {p.name.removeprefix(".staging-") for p in work_dir.glob(".staging-*")}
    keys |= {p.name[1 : -len(".lock")] for p in work_dir.glob(".*.lock")}
    for key in sorted(keys):
        other = FileLock(work_dir / f".{key}.lock")
        try:
            other.acquire(timeout=0)
        except Timeout:
            continue  # in training now (or our own lock, held)
        try:
            log.info("removing the staging folder of abandoned inputs %s", key)
            shutil.rmtree(work_dir / f".staging-{key}", ignore_errors=True)
            Path(other.lock_file).unlink(missing_ok=True)
        finally:
            other.release()


def report(checkpoint: Path, settings: TrainSettings) -> dict:
    """The checkpoint's manifest, brought up to this run's settings and MFU (rewritten in place
    when they differ; only settings outside the cache key can, e.g. ``peak_tflops``).

    MFU = model FLOPs per token x tokens/s / (ranks x peak FLOP/s), None without ``peak_tflops``.
    """
    path = checkpoint / CHECKPOINT_MANIFEST
    manifest = json.loads(path.read_text())
    summary = manifest["summary"]
    mfu = None
    if settings.peak_tflops and summary["tokens_per_s"]:
        peak = summary["world_size"] * settings.peak_tflops * 1e12
        mfu = round(summary["model_flops_per_token"] * summary["tokens_per_s"] / peak, 6)
    if manifest["settings"] != settings.model_dump() or summary["mfu"] != mfu:
        manifest = {
            **manifest,
            "settings": settings.model_dump(),
            "summary": {**summary, "mfu": mfu},
        }
        write_bytes_atomic(json.dumps(manifest, indent=2).encode(), path)
    return manifest


def _failure(error_dir: Path, returncode: int, tail: deque[str]) -> str:
    """The failing rank's own error (the earliest one written), else the output's last lines."""
    errors = []
    for path in error_dir.glob("rank-*.json"):
        try:
            errors.append(json.loads(path.read_text()))
        except ValueError:
            continue
    if not errors:
        return f"training exited with code {returncode}; last lines:\n" + "\n".join(tail)
    first = min(errors, key=lambda e: e["time"])
    others = sorted(e["rank"] for e in errors if e is not first)
    also = f" (then ranks {others} failed too)" if others else ""
    trace = "\n".join(first["traceback"].rstrip().splitlines()[-12:])
    return f"training failed on rank {first['rank']}{also}: {first['error']}\n{trace}"
