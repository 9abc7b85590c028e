"""What the console leaves out besides Dagster's events: DeepSpeed's CPU-fallback notice."""

import logging

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
