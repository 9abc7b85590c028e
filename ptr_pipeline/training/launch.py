"""Start training in a fresh process (so GPU memory is freed after) and read its manifest.

One rank: ``python -m ptr_pipeline.training.train`` with the single-process rendezvous variables
DeepSpeed needs (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; without them it looks for
mpi4py). Several ranks: DeepSpeed's own launcher, ``deepspeed --num_gpus N --module ...``.
"""

import json
import logging
import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from ptr_pipeline.storage import table_fingerprint, write_parquet_atomic
from ptr_pipeline.training.settings import TrainSettings

log = logging.getLogger(__name__)

CODE_VERSION = "train_v1"
MANIFEST = "ptr_manifest.json"  # written by train.py beside the weights


class TrainingFailed(RuntimeError):
    """The training process exited non-zero; the message ends with its last output lines."""


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
    output_dir: Path,
    work_dir: Path,
    device: str = "cpu",
    on_line: Callable[[str], None] = log.info,
) -> dict:
    """Fine-tune ``model_path`` on ``dataset`` and write a Hugging Face checkpoint to ``output_dir``.

    Args:
        dataset: a ``schemas.PTR_DATASET`` table.
        settings: the stage settings.
        model_path: the resolved base model (what ``from_pretrained`` loads).
        output_dir: the checkpoint folder to create.
        work_dir: where the job file and the dataset copy go.
        device: "cpu" or "cuda".
        on_line: receives every output line of the training process.

    Returns:
        The checkpoint manifest (settings, loss curve, files).

    Raises:
        TrainingFailed: when the process exits non-zero.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    dataset_path = work_dir / "train.parquet"
    write_parquet_atomic(dataset, dataset_path)
    job = {
        "settings": settings.model_dump(),
        "base_model": settings.base_model,
        "model_path": model_path,
        "dataset_path": str(dataset_path),
        "dataset_fingerprint": table_fingerprint(dataset),
        "output_dir": str(output_dir),
        "code_version": CODE_VERSION,
    }
    job_path = work_dir / "job.json"
    job_path.write_text(json.dumps(job, indent=2))
    argv = command(settings, job_path)
    log.info("starting training: %s", " ".join(argv))
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(
        argv,
        env=environment(settings, device),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            on_line(line)
    if proc.returncode != 0:
        raise TrainingFailed(
            f"training exited with code {proc.returncode}; last lines:\n" + "\n".join(tail)
        )
    return json.loads((output_dir / MANIFEST).read_text())
