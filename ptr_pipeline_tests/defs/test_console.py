"""What the console leaves out besides Dagster's events: DeepSpeed's CPU-fallback notice."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ptr_pipeline.defs.console  # noqa: F401  (installs the filter on DeepSpeed's logger)

NOTICE = (
    "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("cuda_built", [False, True])
def test_deepspeeds_cpu_fallback_is_dropped_only_where_torch_has_no_cuda(monkeypatch, cuda_built):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: cuda_built)
    deepspeed = logging.getLogger("DeepSpeed")
    records = _Records()
    deepspeed.addHandler(records)
    try:
        deepspeed.warning(NOTICE)
        deepspeed.warning("Some other DeepSpeed warning.")
    finally:
        deepspeed.removeHandler(records)
    assert "Some other DeepSpeed warning." in records.messages
    assert (NOTICE in records.messages) == cuda_built  # with CUDA it means the GPU was not found


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason="with CUDA the notice is kept")
def test_a_process_of_the_code_location_does_not_print_deepspeeds_cpu_fallback():
    """DeepSpeed warns when it is first imported (a stage loading a model imports it through
    accelerate); a process that loaded the definitions does not print it, one that did not does."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("DS_ACCELERATOR", None)  # set, DeepSpeed detects nothing and says nothing

    def output(code: str) -> str:  # DeepSpeed logs to stdout
        argv = [sys.executable, "-c", code]
        proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout + proc.stderr

    assert "Setting accelerator to CPU" in output("import deepspeed")
    assert "Setting accelerator to CPU" not in output("import ptr_pipeline.definitions, deepspeed")
