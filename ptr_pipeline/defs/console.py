"""The console a run prints to: one line per stage's progress, one cause per failure, one trace.

Dagster's default console logger prints every event at DEBUG (about 560 lines for the demo) and a
failure's stack trace twice (on the step's failure and again on the run's). ``ptr_console`` is a
Dagster ``@logger`` that every job of this code location selects by default (the jobs' run config
names it; a run config of your own is merged with that default). It prints:

- the INFO-and-above lines of the pipeline's own loggers (each stage reports what it did);
- one line when a step succeeds, with its duration;
- for a failed step, its cause on one line (the exception the stage raised, which names the file,
  row and field where one is at fault), then that exception's stack trace, once;
- for the failed run, one line (no trace); the "Not executing" line of each step skipped because
  of the failure is left out.

Every event is still stored in the instance's event log and shown whole in the UI; only the
console is shorter. ``log_level: DEBUG`` in the logger's config prints every event.

DeepSpeed's CPU-fallback notice is dropped in every process of this code location
(``ptr_pipeline.notices``, installed on import here).
"""

import logging
import sys

import dagster as dg

from ptr_pipeline.notices import quiet_deepspeed

_SKIPPED = "Not executing."  # Dagster's message for steps skipped after an upstream failure

quiet_deepspeed()


def _user_error(error) -> object:
    """The exception the pipeline's code raised: the first one in the chain that is not one of
    Dagster's wrappers (its own ``__cause__``, e.g. the UnicodeDecodeError under an InputError that
    names file and row, is left out)."""
    while error is not None and (error.cls_name or "").startswith("Dagster") and error.cause:
        error = error.cause
    return error


class _Formatter(logging.Formatter):
    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key") or ""
        when = self.formatTime(record, "%H:%M:%S")
        message = meta.get("orig_message") or record.getMessage()
        kind = event.event_type_value if event is not None else None
        if kind == "STEP_FAILURE":
            cause = _user_error(event.event_specific_data.error)
            lines = [f"{when} {step} FAILED: {cause.message.strip() if cause else message}"]
            if cause is not None and cause.stack:
                lines.append("".join(cause.stack).rstrip())
            return "\n".join(lines)
        if kind == "PIPELINE_FAILURE":
            line = f"{when} run failed: {message.splitlines()[0]}"
            cause = _user_error(getattr(event.event_specific_data, "error", None))
            if cause is None or "Steps failed" in line:  # the step's failure printed it already
                return line
            # The run failed outside any step (e.g. its config was refused): cause and trace once.
            return "\n".join([line, f"  {cause.message.strip()}", "".join(cause.stack).rstrip()])
        if kind == "STEP_SUCCESS":
            return f"{when} {step} done ({message.rsplit(' in ', 1)[-1].rstrip('.')})"
        return f"{when} {step + ': ' if step else ''}{message}"


class _Filter(logging.Filter):
    """Keeps what the console shows (module docstring)."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return True
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        kind = event.event_type_value if event is not None else None
        if kind in ("STEP_FAILURE", "PIPELINE_FAILURE", "STEP_SUCCESS"):
            return True
        if _SKIPPED in record.getMessage():
            return False
        return record.levelno >= logging.INFO


@dg.logger(
    config_schema={
        "log_level": dg.Field(
            str, default_value="INFO", description="INFO: progress and failures; DEBUG: every event"
        )
    },
    description="Short console output: stage progress, one cause and one trace per failure.",
)
def ptr_console(init_context: dg.InitLoggerContext) -> logging.Logger:
    verbose = init_context.logger_config["log_level"].upper() == "DEBUG"
    logger = logging.Logger("ptr_console", level=logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(verbose))
    handler.addFilter(_Filter(verbose))
    logger.addHandler(handler)
    return logger


# The run config the jobs start from (merged with the user's). Dagster ignores a job's default run
# config for a run over a partition range (ptr_full_job, eval_job cover every eval task), so those
# runs name the logger themselves: ptr_pipeline/configs/console.yaml, or `loggers:` in your config.
CONSOLE_RUN_CONFIG = {"loggers": {"ptr_console": {}}}


@dg.definitions
def console() -> dg.Definitions:
    return dg.Definitions(loggers={"ptr_console": ptr_console})
