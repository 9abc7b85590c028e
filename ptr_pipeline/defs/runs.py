"""Run guard: before any step runs, a run checks its whole config and cleans up after dead runs.

Dagster checks a run's config against the config schema at launch, which knows types but not the
settings' bounds (``num_rounds >= 1``, ``temperature >= 0``, ...) nor their cross-field rules;
pydantic would only enforce them when each step starts, after earlier steps spent their compute.
And a run whose worker is killed (``kill -9``) stays ``STARTED`` forever, holding its ``gpu`` pool
slot: the next run waits on it. Both are fixed at the one point every run passes through, its
executor (``ptr_executor``, Dagster's ``multi_or_in_process_executor`` wrapped):

1. the run records its worker's pid, the process start time and the host as run tags, and puts
   its run id in the environment (``PTR_RUN_ID``) that its step processes and training processes
   inherit;
2. runs on this host whose recorded worker is gone are marked failed, after the processes they
   left behind (a step process or a training still running on the GPU, found by ``PTR_RUN_ID``)
   are killed; and the pool slots of every run that has ended are freed (no waiting for
   ``free_slots_after_run_end_seconds``);
3. every op's config is validated by its pydantic settings class, then its ``preflight()`` (if
   it has one: the eval stage reads its configured sources), then the rules that span ops (a
   query pool capped below one training micro-step); a bad value fails the run naming the op and
   the field, before any step. A run whose models are the world's and whose query or eval
   sources are not gets one warning line (``ptr_pipeline.out_of_world``), and runs.

Under the daemon (``make dev``) a killed run is failed without waiting for the next run: by
Dagster's own run monitoring, which asks the instance's run launcher, every
``run_monitoring.poll_interval_seconds``, whether each live run's worker is alive. Dagster's
``DefaultRunLauncher`` cannot tell (its monitoring never fails a killed run), so the local instance
(``instance/dagster.yaml``) names ``PtrRunLauncher``: the default launcher plus that health check,
from the tags of step 1. A run found dead has its leftover processes killed and its pool slots freed
before Dagster marks it failed. It replaces a sensor that did step 2 every 30 s and whose ticks
printed two lines each to the ``make dev`` console; the monitoring daemon prints nothing while no
run is live. The default execution mode is ``in_process`` (one process per run: each step saves
the 3-4 s of a fresh process, and generators free their model with ``close()``);
``execution: {config: {multiprocess: {}}}`` in a run config gives one process per step.
"""

import inspect
import os
import socket

import dagster as dg
import psutil  # process liveness, portably (a dependency of DeepSpeed and Dagster)
import pydantic
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus  # the launcher API's types

from ptr_pipeline.out_of_world import launch_note

RUN_ID_ENV = "PTR_RUN_ID"  # inherited by every process a run starts
PID_TAG = "ptr/worker_pid"
START_TAG = "ptr/worker_started"
HOST_TAG = "ptr/worker_host"

_LIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _process_started(pid: int) -> str | None:
    """The start time of process ``pid`` (to tell it from a later process given the same pid)."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return None


def _kill_leftovers(run_id: str) -> list[int]:
    """Kill the processes a dead run left behind (they carry its id in PTR_RUN_ID)."""
    killed: list[psutil.Process] = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get(RUN_ID_ENV) == run_id:
                process.kill()
                killed.append(process)
        except psutil.Error:  # gone meanwhile, or another user's process
            continue
    psutil.wait_procs(killed, timeout=10)
    return [p.pid for p in killed]


def _worker_gone(run: dg.DagsterRun) -> bool:
    """Whether ``run`` recorded its worker on this host (step 1) and that process is gone. A run
    of another host, or one not yet in its executor, cannot be told: False."""
    tags = run.tags
    if tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in tags:
        return False
    return _process_started(int(tags[PID_TAG])) != tags.get(START_TAG)


def _clean_up(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """Kill what the dead ``run`` left behind and free its pool slots; says what was done."""
    leftovers = _kill_leftovers(run.run_id)
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return (
        f"run worker (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) is gone, killed or "
        f"crashed; {len(leftovers)} process(es) it left killed, its pool slots freed"
    )


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the live-looking runs of this host whose worker process is gone, and free the
    pool slots of every run that has ended. Returns the run ids marked failed."""
    reaped = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_LIVE)):
        if _worker_gone(run):
            instance.report_run_failed(run, message=_clean_up(instance, run))
            reaped.append(run.run_id)
    storage = instance.event_log_storage
    for run_id in storage.get_concurrency_run_ids():
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
    return reaped


class PtrRunLauncher(dg.DefaultRunLauncher):
    """Dagster's default run launcher, whose run worker health Dagster's run monitoring can check
    (module docstring): the local instance's launcher (``instance/dagster.yaml``,
    ``run_launcher``)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        if not _worker_gone(run):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        current = self._instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:  # it ended as the worker exited: all is well
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        return CheckRunHealthResult(WorkerStatus.FAILED, _clean_up(self._instance, run))


def config_class(op_def) -> type[pydantic.BaseModel] | None:
    """The pydantic ``dg.Config`` class an op's ``config`` parameter is annotated with."""
    fn = getattr(getattr(op_def, "compute_fn", None), "decorated_fn", None)
    if fn is None:
        return None
    parameter = inspect.signature(fn).parameters.get("config")
    annotation = parameter.annotation if parameter else None
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    return None


def _op_configs(
    job_def: dg.JobDefinition, run_config: dict
) -> tuple[dict[str, pydantic.BaseModel], list[str]]:
    """The validated settings of ``job_def``'s ops in ``run_config``, and the violations."""
    problems = []
    ops = (run_config or {}).get("ops") or {}
    configs: dict[str, pydantic.BaseModel] = {}
    for node in job_def.graph.nodes:
        cls = config_class(node.definition)
        if cls is None:
            continue
        given = (ops.get(node.name) or {}).get("config") or {}
        try:
            configs[node.name] = cls.model_validate(given)
        except pydantic.ValidationError as e:
            for error in e.errors():
                where = ".".join(["ops", node.name, "config", *map(str, error["loc"])])
                got = f" (got {error['input']!r})" if error["loc"] else ""
                problems.append(f"{where}: {error['msg']}{got}")
    return configs, problems


def config_problems(job_def: dg.JobDefinition, run_config: dict) -> list[str]:
    """Every settings violation in ``run_config`` for ``job_def``'s ops, as 'op.field: why'."""
    configs, problems = _op_configs(job_def, run_config)
    for name, config in configs.items():
        if hasattr(config, "preflight"):
            try:
                config.preflight()
            except ValueError as e:  # InputError and friends
                problems.append(f"ops.{name}.config: {e}")
    return problems + _cross_op_problems(configs)


def _cross_op_problems(configs: dict) -> list[str]:
    """Rules between the stages of one run (checked only when the run holds both)."""
    problems = []
    pool, train = configs.get("query_pool"), configs.get("fine_tune")
    if pool is not None and train is not None and pool.max_queries is not None:
        needed = train.micro_batch_size * train.num_gpus
        if pool.max_queries < needed:
            problems.append(
                f"ops.fine_tune.config.micro_batch_size: {train.micro_batch_size} x num_gpus "
                f"{train.num_gpus} = {needed} rows per micro-step, but query_pool.max_queries caps "
                f"the dataset at {pool.max_queries} rows"
            )
    return problems


def out_of_world_note(job_def: dg.JobDefinition, run_config: dict) -> str | None:
    """One line when the run's models are the world's and its query or eval sources are not
    (``ptr_pipeline.out_of_world``); None when the run configures no models or all is the
    world's."""
    configs, _ = _op_configs(job_def, run_config)
    models = configs.get("models")
    if models is None:
        return None
    pool, evals = configs.get("query_pool"), configs.get("eval_sets")
    return launch_note(
        {role: getattr(models, role) for role in ("weak", "base", "strong")},
        getattr(pool, "source", None),
        getattr(evals, "eval_sources", None),
    )


class RunConfigError(ValueError):
    """A run's config breaks its settings' rules; raised before any step runs."""


class _GuardedExecutor(dg.Executor):
    def __init__(self, inner: dg.Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        instance, run = plan_context.instance, plan_context.dagster_run
        os.environ[RUN_ID_ENV] = run.run_id  # step and training processes inherit it
        pid = os.getpid()
        instance.add_run_tags(
            run.run_id,
            {
                PID_TAG: str(pid),
                START_TAG: _process_started(pid) or "",
                HOST_TAG: socket.gethostname(),
            },
        )
        for run_id in reap_dead_runs(instance):
            plan_context.log.warning(f"marked run {run_id} failed: its worker process is gone")
        job_def, run_config = plan_context.job.get_definition(), plan_context.run_config
        note = out_of_world_note(job_def, run_config)  # said also when the config is refused
        if note:
            plan_context.log.warning(note)
        problems = config_problems(job_def, run_config)
        if problems:
            raise RunConfigError("invalid run config, nothing was run: " + "; ".join(problems))
        yield from self._inner.execute(plan_context, execution_plan)


@dg.executor(
    name="ptr_executor",
    config_schema=dg.Field(
        dg.Selector(
            {
                "in_process": dg.multi_or_in_process_executor.config_schema.config_type.fields[
                    "in_process"
                ],
                "multiprocess": dg.multi_or_in_process_executor.config_schema.config_type.fields[
                    "multiprocess"
                ],
            }
        ),
        default_value={"in_process": {}},
    ),
    requirements=dg.multi_or_in_process_executor.get_requirements,
)
def ptr_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Dagster's multi_or_in_process_executor (in_process by default), guarded (module docstring)."""
    return _GuardedExecutor(dg.multi_or_in_process_executor.executor_creation_fn(init_context))


@dg.definitions
def run_guard() -> dg.Definitions:
    return dg.Definitions(executor=ptr_executor)
