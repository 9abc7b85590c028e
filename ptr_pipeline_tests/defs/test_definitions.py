"""The code location: asset graph, groups, jobs, schedule and run-config presets, as a snapshot."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from ptr_pipeline.definitions import build_defs

CONFIGS = Path(__file__).resolve().parents[2] / "ptr_pipeline" / "configs"

EXPECTED_ASSETS = {
    # asset: (group, upstream assets)
    "weak_model": ("models", set()),
    "base_model": ("models", set()),
    "strong_model": ("models", set()),
    "eval_sets": ("evaluation", set()),
    "query_pool": ("dataset", {"eval_sets"}),  # decontaminated against the evaluated items
    "weak_thoughts": ("dataset", {"query_pool", "weak_model"}),
    "strong_refinements": ("dataset", {"weak_thoughts", "strong_model"}),
    "filter_decisions": ("dataset", {"strong_refinements"}),  # its rows carry the thoughts
    "ptr_dataset": ("dataset", {"strong_refinements"}),
    # the card names the models
    "ptr_dataset_hf": ("dataset", {"strong_refinements", "weak_model", "strong_model"}),
    "ptr_checkpoint": ("training", {"ptr_dataset", "base_model"}),
    "sft_checkpoint": ("training", {"ptr_dataset", "base_model"}),
    "eval_scores": ("evaluation", {"eval_sets", "base_model", "sft_checkpoint", "ptr_checkpoint"}),
    # eval_sets: the items' options and golds set each task's chance level (evaluation.chance)
    "eval_summary": ("evaluation", {"eval_scores", "eval_sets"}),
    "eval_comparisons": ("evaluation", {"eval_scores", "eval_sets"}),
}


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return build_defs()


def test_asset_graph_snapshot(defs):
    graph = defs.resolve_asset_graph()
    got = {
        key.to_user_string(): (
            graph.get(key).group_name,
            {p.to_user_string() for p in graph.get(key).parent_keys},
        )
        for key in graph.get_all_asset_keys()
    }
    assert got == EXPECTED_ASSETS


def test_gpu_assets_share_the_gpu_pool_and_everything_has_a_code_version(defs):
    graph = defs.resolve_asset_graph()
    for name in ("weak_thoughts", "strong_refinements", "ptr_checkpoint", "sft_checkpoint",
                 "eval_scores"):  # fmt: skip
        assert graph.get(dg.AssetKey(name)).pools == {"gpu"}
    for key in graph.get_all_asset_keys():
        assert graph.get(key).code_version, key


def test_blocking_check_guards_training(defs):
    checks = {k.name: k for k in defs.resolve_asset_graph().asset_check_keys}
    assert checks["ptr_dataset_is_trainable"].asset_key == dg.AssetKey("ptr_dataset")
    from ptr_pipeline.defs.filtering import consistency_filter

    assert [(s.name, s.blocking) for s in consistency_filter.check_specs] == [
        ("ptr_dataset_is_trainable", True)
    ]


def test_jobs_and_schedule(defs):
    dataset = defs.resolve_job_def("dataset_rebuild_job")
    assert {k.to_user_string() for k in dataset.asset_layer.executable_asset_keys} == {
        "weak_model", "base_model", "strong_model",
        "eval_sets", "query_pool", "weak_thoughts", "strong_refinements", "filter_decisions",
        "ptr_dataset", "ptr_dataset_hf",
    }  # fmt: skip
    assert "dagster/asset_partition_range_end" not in dataset.tags  # so its console config holds
    full = defs.resolve_job_def("ptr_full_job")
    assert {k.to_user_string() for k in full.asset_layer.executable_asset_keys} == set(
        EXPECTED_ASSETS
    )
    assert full.tags["dagster/asset_partition_range_start"] == "gsm8k"
    assert full.tags["dagster/asset_partition_range_end"] == "xsum"  # every task
    assert full.executor_def.name == "ptr_executor"
    assert not list(defs.sensors or [])  # dead runs: Dagster's run monitoring (dagster.yaml)
    schedule = defs.resolve_schedule_def("nightly_dataset_rebuild_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.job_name == "dataset_rebuild_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    dg.Definitions.validate_loadable(defs)


@pytest.mark.parametrize(
    "preset", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml"))
)
def test_presets_are_valid_run_config_for_the_full_job(defs, preset):
    """Every preset (gpu_qwen2, console, the ablations) passes Dagster's and our validation."""
    from ptr_pipeline.defs.runs import config_problems

    config = yaml.safe_load((CONFIGS / preset).read_text())
    job = defs.resolve_job_def("ptr_full_job")
    assert dg.validate_run_config(job, config)
    if "gpu" not in preset:  # its eval files live on the GPU machine
        assert config_problems(job, config) == []


@pytest.mark.parametrize("folder", ["instance", "docker"])
def test_instance_configs_are_valid(folder):
    """The local/CI instance/dagster.yaml and the Postgres one in docker/ pass Dagster's schema;
    none lies in the repository root, where `dagster dev` would warn that it is not used."""
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(CONFIGS.parents[1] / folder))
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] == 300
    assert not (CONFIGS.parents[1] / "dagster.yaml").exists()
    # run monitoring can check a local run's worker (Docker's launcher can too)
    if folder == "instance":
        assert config["run_launcher"] == {
            "module": "ptr_pipeline.defs.runs",
            "class": "PtrRunLauncher",
        }
        assert config["run_monitoring"]["enabled"]
    assert "ptr_pipeline" in config["python_logs"]["managed_python_loggers"]
    assert ("storage" in config) == (folder == "docker")  # local: SQLite under DAGSTER_HOME


def test_every_settings_rule_is_checked_for_the_whole_run(defs):
    """Dagster's launch validation knows types, not bounds: these pass it, and the run guard
    refuses them before any step, naming op and field."""
    from ptr_pipeline.defs.runs import config_problems

    job = defs.resolve_job_def("ptr_full_job")
    config = {
        "ops": {
            "strong_refinements": {"config": {"num_rounds": 0}},
            "weak_thoughts": {"config": {"temperature": -1}},
            "consistency_filter": {"config": {"min_step_similarity": 7}},
            "fine_tune": {"config": {"offload_optimizer": True}},  # needs zero_stage >= 1
        }
    }
    assert dg.validate_run_config(job, config)  # Dagster alone accepts it
    assert sorted(config_problems(job, config)) == [
        "ops.consistency_filter.config.min_step_similarity: Input should be less than or equal to 1 (got 7)",
        "ops.fine_tune.config: Value error, offload_optimizer needs zero_stage >= 1",
        "ops.strong_refinements.config.num_rounds: Input should be greater than or equal to 1 (got 0)",
        "ops.weak_thoughts.config.temperature: Input should be greater than or equal to 0 (got -1)",
    ]  # fmt: skip
    assert config_problems(job, {}) == []  # the defaults are the demo
    # Names that pydantic's types accept but the pipeline does not know.
    more = {
        "ops": {
            "weak_thoughts": {"config": {"template": "nope"}},
            "models": {"config": {"weak": "tiny:wek", "base": "world:bse"}},
            "eval_sets": {"config": {"eval_sources": {"GSM8K": "/nonexistent.jsonl",
                                                       "arc": "/nonexistent/arc"}}},
            "eval_scores": {"config": {"extraction": {"gsm8k": "lenient"}}},
        }
    }  # fmt: skip
    problems = "\n".join(config_problems(job, more))
    for expected in (
        "ops.models.config.weak: Value error, unknown tiny model 'tiny:wek'",
        "ops.models.config.base: Value error, unknown world model 'world:bse'",
        "ops.weak_thoughts.config.template: Value error, unknown template 'nope'",
        "ops.eval_sets.config: Value error, eval_sources: unknown task(s) ['GSM8K']; the tasks "
        "are ['arc', 'commonsense_qa', 'drop', 'gpqa', 'gsm8k', 'humaneval', 'math', 'mmlu', "
        "'winogrande', 'xsum']",
        "ops.eval_scores.config: Value error, extraction: gsm8k 'lenient'; use one of "
        "['strict', 'flexible']",
    ):
        assert expected in problems


def test_eval_sources_are_read_and_cross_stage_rules_checked_at_launch(defs, tmp_path):
    from ptr_pipeline.defs.runs import config_problems

    (tmp_path / "g.jsonl").write_text('{"question": "What is 2+2?", "answer": "4"}\n')
    config = {
        "ops": {
            "eval_sets": {"config": {"eval_sources": {"gsm8k": str(tmp_path / "g.jsonl")}}},
            "fine_tune": {"config": {"micro_batch_size": 1000}},
            "query_pool": {"config": {"max_queries": 24}},
        }
    }
    problems = config_problems(defs.resolve_job_def("ptr_full_job"), config)
    assert problems == [
        f"ops.eval_sets.config: {tmp_path / 'g.jsonl'} row 1 field 'answer': no '#### <number>' final answer",
        "ops.fine_tune.config.micro_batch_size: 1000 x num_gpus 1 = 1000 rows per micro-step, "
        "but query_pool.max_queries caps the dataset at 24 rows",
    ]


@pytest.mark.parametrize(
    ("lines", "fault"),
    [
        ('{"instruction": "Explain tides."}\n{"instruction": 7}\n', "row 2 field 'instruction': expected a string, got int"),
        ('{"instruction": "Explain tides."}\n{"prompt_text": "x"}\n', "row 2: no query field"),
        ('{"instruction": "Explain tides."}\n{"instruction": \n', "row 2"),
        ("\n\n", "no records"),
        ('{"instruction": null}\n{"instruction": "hi"}\n', "no query survives cleaning (2 records; dropped {'empty': 1, 'too_short': 1})"),
    ],
)  # fmt: skip
def test_a_bad_query_pool_source_fails_the_run_at_launch(defs, tmp_path, lines, fault):
    """Read at launch by the run guard (QueryPoolSettings.preflight), not when query_pool runs:
    in a fresh PTR_HOME the world's models are built before it."""
    from ptr_pipeline.defs.runs import config_problems

    source = tmp_path / "q.jsonl"
    source.write_text(lines)
    config = {"ops": {"query_pool": {"config": {"source": str(source)}}}}
    problems = config_problems(defs.resolve_job_def("ptr_full_job"), config)
    assert len(problems) == 1
    assert problems[0].startswith(f"ops.query_pool.config: {source}")
    assert fault in problems[0]


def test_the_out_of_world_line_follows_the_runs_models_and_sources(defs, tmp_path):
    from ptr_pipeline.defs.runs import out_of_world_note

    full = defs.resolve_job_def("ptr_full_job")
    assert out_of_world_note(full, {}) is None  # the demo: the world's models on its own data
    mine = tmp_path / "mmlu.jsonl"
    mine.write_text("{}\n")
    own = {"ops": {"eval_sets": {"config": {"eval_sources": {"mmlu": str(mine)}}}}}
    assert f"eval_sets.eval_sources.mmlu '{mine}' is not" in out_of_world_note(full, own)
    tiny = {"weak": "tiny:weak", "base": "tiny:base", "strong": "tiny:strong"}
    own["ops"]["models"] = {"config": tiny}
    assert out_of_world_note(full, own) is None  # not the world's models
    # a run without the models op configures no models
    assert out_of_world_note(defs.resolve_job_def("eval_job"), own) is None
