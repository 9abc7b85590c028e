"""Library notices that say nothing on this project's machines, dropped where they are raised.

DeepSpeed warns "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable
to detect it." when it is imported on a machine without an accelerator. transformers imports it
through accelerate whenever a model is loaded or saved (``save_pretrained`` unwraps the model with
``accelerate.utils.extract_model_from_parallel``), so without this the line shows in stages that
never train and in ``python -m ptr_pipeline refine``. Where torch is built without CUDA there is
no accelerator to miss, and the line is dropped; with a CUDA build it still shows: then it means
the GPU was not found. Installed by the Dagster console (``defs.console``) and by the CLI.
"""

import logging

_CPU_FALLBACK = "Setting accelerator to CPU."  # DeepSpeed's, when it detects no accelerator


class _NoAcceleratorToMiss(logging.Filter):
    """Drops DeepSpeed's CPU-fallback warning where torch has no CUDA (module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(_CPU_FALLBACK):
            return True
        import torch  # loaded already: DeepSpeed detected with it

        return torch.backends.cuda.is_built()


def quiet_deepspeed() -> None:
    """Install the filter on DeepSpeed's logger (by name: it applies when DeepSpeed creates it).
    Idempotent."""
    deepspeed = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _NoAcceleratorToMiss) for f in deepspeed.filters):
        deepspeed.addFilter(_NoAcceleratorToMiss())
