"""The whole graph materialized in-process on the tiny models, and the blocking dataset check."""

import dagster as dg
import pyarrow.parquet as pq
import pytest
from transformers import AutoModelForCausalLM

from ptr_pipeline.__main__ import report
from ptr_pipeline.definitions import build_defs
from ptr_pipeline.defs.resources import build_resources

SMALL = {
    "ops": {
        "query_pool": {"config": {"max_queries": 6}},
        "weak_thoughts": {"config": {"max_new_tokens": 12, "shard_size": 4}},
        "strong_refinements": {"config": {"max_new_tokens": 12, "num_rounds": 2}},
        "ptr_checkpoint": {
            "config": {"max_steps": 3, "micro_batch_size": 2, "learning_rate": 0.01}
        },
        "eval_scores": {"config": {"max_examples": 3, "num_rounds": 2, "max_new_tokens": 8}},
    }
}


@pytest.fixture
def defs(home, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("PTR_HOME", str(home.root))
    return build_defs()


def _metadata(result, asset: str) -> dict:
    events = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]
    assert events, f"{asset} was not materialized"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


@pytest.mark.slow
def test_full_job_materializes_every_asset(defs, home, tmp_path, capsys):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        job = defs.resolve_job_def("ptr_full_job")
        result = job.execute_in_process(run_config=SMALL, instance=instance)
        assert result.success
        # Unchanged inputs: nothing is generated, trained or evaluated again (no new shard,
        # checkpoint or score file), and the same checkpoint version is published.
        work = sorted(p for p in home.work.rglob("*") if p.is_file())
        rerun = job.execute_in_process(run_config=SMALL, instance=instance)
        assert sorted(p for p in home.work.rglob("*") if p.is_file()) == work
    assert rerun.success
    again = _metadata(rerun, "ptr_checkpoint")
    assert again["reused"] is True and again["steps_run"] == 0
    assert again["version"] == _metadata(result, "ptr_checkpoint")["version"]
    assert _metadata(result, "query_pool")["dagster/row_count"] == 6
    assert _metadata(result, "weak_thoughts")["dagster/row_count"] == 12  # 2 thoughts per query
    assert _metadata(result, "strong_refinements")["dagster/row_count"] == 12  # 2 rounds
    dataset = _metadata(result, "ptr_dataset")
    assert dataset["dagster/row_count"] > 0 and 0 < dataset["pass_rate"] <= 1
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"ptr_dataset_is_trainable": True, "query_pool_not_empty": True}

    checkpoint = _metadata(result, "ptr_checkpoint")
    assert checkpoint["steps"] == 3 and len(checkpoint["loss_curve"]) == 3
    assert all(
        0 < loss < 20 for loss in checkpoint["loss_curve"]
    )  # finite CE over a ~1.3k vocabulary
    latest = home.artifacts / "ptr_checkpoint" / "latest"
    assert (
        latest.resolve() == home.artifacts / "ptr_checkpoint" / "versions" / checkpoint["version"]
    )
    AutoModelForCausalLM.from_pretrained(latest)

    per_partition = {
        e.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("eval_scores")
    }
    for task in ("gsm8k", "arc", "mmlu"):
        scores = pq.read_table(home.artifacts / "eval_scores" / task / "latest.parquet")
        assert scores.num_rows == 2 * 3 * 2  # models x examples x rounds
        assert set(scores.column("task").to_pylist()) == {task}
        assert per_partition[task]["dagster/row_count"].value == 12  # this partition's rows
        assert f"| {task} |" in per_partition[task]["accuracy_by_round"].value
        other = next(t for t in ("gsm8k", "arc", "mmlu") if t != task)
        assert f"| {other} |" not in per_partition[task]["accuracy_by_round"].value
    summary = pq.read_table(home.artifacts / "eval_summary" / "latest.parquet").to_pylist()
    assert {(s["model_role"], s["task"], s["round"]) for s in summary} == {
        (m, t, r) for m in ("base", "ptr") for t in ("gsm8k", "arc", "mmlu") for r in (1, 2)
    }
    assert all(s["n"] == 3 for s in summary)

    assert report(home.root) == 0  # what `make demo` prints last
    printed = capsys.readouterr().out
    assert (
        f"{home.artifacts / 'ptr_dataset' / 'latest.parquet'}  {dataset['dagster/row_count']} rows"
        in printed
    )
    assert "| ptr | gsm8k |" in printed and "| round 1 | round 2 |" in printed


@pytest.mark.slow
def test_a_filter_that_keeps_nothing_fails_and_keeps_the_last_dataset(defs, home, tmp_path):
    ops = {k: v for k, v in SMALL["ops"].items() if k != "eval_scores"}
    strict = {**ops, "consistency_filter": {"config": {"min_answer_chars": 100_000}}}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:

        def run(config):
            return dg.materialize(
                [*defs.assets, *defs.asset_checks],
                resources=build_resources(str(home.root)),
                selection=dg.AssetSelection.groups("dataset", "training"),
                run_config={"ops": config},
                instance=instance,
                raise_on_error=False,
            )

        assert run(
            {**ops, "ptr_checkpoint": {"config": {"max_steps": 1, "micro_batch_size": 2}}}
        ).success
        good = pq.read_table(home.artifacts / "ptr_dataset" / "latest.parquet")
        checkpoint = (home.artifacts / "ptr_checkpoint" / "latest").resolve()
        result = run(strict)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "kept 0 of 6 rows (dropped {'answer_too_short': 6}); nothing was written" in str(failure)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert not materialized & {"filter_decisions", "ptr_dataset", "ptr_checkpoint"}
    assert pq.read_table(home.artifacts / "ptr_dataset" / "latest.parquet").equals(good)
    assert (home.artifacts / "ptr_checkpoint" / "latest").resolve() == checkpoint
