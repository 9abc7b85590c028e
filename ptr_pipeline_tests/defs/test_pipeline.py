"""The whole graph materialized in-process on the tiny models, and the blocking dataset check."""

import dagster as dg
import datasets
import pyarrow.parquet as pq
import pytest
from transformers import AutoModelForCausalLM

from ptr_pipeline.__main__ import report
from ptr_pipeline.definitions import build_defs
from ptr_pipeline.defs.resources import build_resources
from ptr_pipeline.evaluation import TASKS
from ptr_pipeline.filtering import REASONS

# The random tiny models (the world's are trained once per session in tests/world): plumbing only.
TINY = {"models": {"config": {"weak": "tiny:weak", "base": "tiny:base", "strong": "tiny:strong"}}}
SMALL = {
    "ops": {
        **TINY,
        # tiny models write noise: only blank answers are dropped
        "consistency_filter": {"config": {"rules": ["empty_step"]}},
        "query_pool": {"config": {"max_queries": 6}},
        "weak_thoughts": {"config": {"max_new_tokens": 12, "shard_size": 4}},
        "strong_refinements": {
            "config": {"max_new_tokens": 12, "num_rounds": 2, "temperature": 0.7}
        },
        "fine_tune": {"config": {"max_steps": 3, "micro_batch_size": 2, "learning_rate": 0.01}},
        "eval_sets": {"config": {"max_examples": 3}},
        "eval_scores": {"config": {"num_rounds": 2, "max_new_tokens": 8}},
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
    for checkpoint in ("ptr_checkpoint", "sft_checkpoint"):
        again = _metadata(rerun, checkpoint)
        assert again["reused"] is True and again["steps_run"] == 0
        assert again["version"] == _metadata(result, checkpoint)["version"]
    assert _metadata(result, "base_model")["spec"] == "tiny:base"
    assert _metadata(result, "query_pool")["dagster/row_count"] == 6
    assert _metadata(result, "weak_thoughts")["dagster/row_count"] == 12  # 2 thoughts per query
    assert _metadata(result, "strong_refinements")["dagster/row_count"] == 12  # 2 rounds
    dataset = _metadata(result, "ptr_dataset")
    assert dataset["dagster/row_count"] > 0 and 0 < dataset["pass_rate"] <= 1
    decisions = _metadata(result, "filter_decisions")
    assert set(decisions["drop_counts"]) == set(REASONS)  # every reason, zeros included
    # The Hugging Face export reads back row for row, with its card.
    exported = home.artifacts / "ptr_dataset_hf" / "latest"
    rows = pq.read_table(home.artifacts / "ptr_dataset" / "latest.parquet").to_pylist()
    assert datasets.load_from_disk(str(exported)).to_list() == rows
    card = (exported / "README.md").read_text()
    assert card.startswith("---\n") and "license: unknown" in card and "drop_counts" in card
    assert '"spec": "tiny:strong"' in card and '"self_consistency_samples_per_answer": [\n' in card
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "ptr_dataset_is_trainable": True,
        "query_pool_not_empty": True,
        "query_pool_contamination_rate": True,
    }

    checkpoint = _metadata(result, "ptr_checkpoint")
    assert checkpoint["steps"] == 3 and len(checkpoint["loss_curve"]) == 3
    sft = _metadata(result, "sft_checkpoint")  # same rows and settings: same step budget
    assert sft["steps"] == 3 and sft["examples"] == checkpoint["examples"]
    assert sft["version"] != checkpoint["version"]
    assert (home.artifacts / "ptr_checkpoint" / "loss.png").read_bytes()[:4] == b"\x89PNG"
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
    assert set(per_partition) == set(TASKS)  # the full job scores every task
    for task in TASKS:
        scores = pq.read_table(home.artifacts / "eval_scores" / task / "latest.parquet")
        assert scores.num_rows == 3 * 3 * 2  # models x examples x rounds
        assert set(scores.column("task").to_pylist()) == {task}
        assert per_partition[task]["dagster/row_count"].value == 18  # this partition's rows
        assert f"| {task} |" in per_partition[task]["score_by_round"].value
        other = next(t for t in TASKS if t != task)
        assert f"| {other} |" not in per_partition[task]["score_by_round"].value
    summary = pq.read_table(home.artifacts / "eval_summary" / "latest.parquet").to_pylist()
    assert {(s["model_role"], s["task"], s["round"], s["metric"]) for s in summary} == {
        (m, t, r, metric)
        for m in ("base", "sft", "ptr")
        for t in TASKS
        for r in (1, 2)
        for metric in TASKS[t].metrics
    }
    assert all(s["n"] == 3 and s["ci_low"] <= s["value"] <= s["ci_high"] for s in summary)
    # the query pool was decontaminated against exactly the items evaluated
    assert _metadata(result, "query_pool")["decontaminated_against"] == {t: 3 for t in TASKS}
    comparisons = pq.read_table(home.artifacts / "eval_comparisons" / "latest.parquet")
    assert set(comparisons.column("comparison").to_pylist()) == {
        "ptr r2 - ptr r1", "ptr r2 - base r1", "ptr r2 - sft r1", "base r2 - base r1",
        "sft r2 - sft r1", "ptr r2 - sft r2",
    }  # fmt: skip
    # random tiny models answer no sum: gsm8k is at chance, in no pooled ("all") row
    assert _metadata(result, "eval_comparisons")["chance_rule"].startswith("An item's chance")
    assert "gsm8k" in _metadata(result, "eval_comparisons")["at_chance_left_out"]
    assert all("gsm8k" not in r["tasks"] for r in comparisons.to_pylist() if r["task"] == "all")
    assert "data:image/png;base64," in _metadata(result, "eval_summary")["plot"]

    assert report(home.root) == 0  # what `make demo` prints last
    printed = capsys.readouterr().out
    assert (
        f"{home.artifacts / 'ptr_dataset' / 'latest.parquet'}  {dataset['dagster/row_count']} rows"
        in printed
    )
    assert printed.startswith(f"PTR report for {home.root}\n\n## Verdict\n")
    assert "| gsm8k (at chance) | accuracy | ptr | 3 | 0.0 |" in printed
    assert "| n | chance | round 1 | round 2 |" in printed
    # both gsm8k extractions, as lm-eval
    assert "| gsm8k (at chance) | strict_match | ptr | 3 | 0.0 |" in printed
    assert "| ptr r2 - base r1 | gsm8k (at chance) | accuracy | 3 |" in printed
    assert "| ptr_checkpoint | " in printed and "STALE" not in printed
    assert "One held-out item, round by round" in printed


@pytest.mark.slow
def test_a_filter_that_keeps_nothing_fails_and_keeps_the_last_dataset(defs, home, tmp_path):
    ops = {k: v for k, v in SMALL["ops"].items() if k not in ("eval_sets", "eval_scores")}
    strict = {
        **ops,
        "consistency_filter": {
            "config": {"rules": ["answer_too_short"], "min_answer_chars": 100_000}
        },
    }
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        dg.materialize(  # the query pool is decontaminated against what is evaluated
            [*defs.assets, *defs.asset_checks],
            resources=build_resources(str(home.root)),
            selection=dg.AssetSelection.assets("eval_sets"),
            instance=instance,
        )

        def run(config):
            return dg.materialize(
                [*defs.assets, *defs.asset_checks],
                resources=build_resources(str(home.root)),
                selection=dg.AssetSelection.groups("models", "dataset", "training"),
                run_config={"ops": config},
                instance=instance,
                raise_on_error=False,
            )

        assert run(
            {**ops, "fine_tune": {"config": {"max_steps": 1, "micro_batch_size": 2}}}
        ).success
        good = pq.read_table(home.artifacts / "ptr_dataset" / "latest.parquet")
        checkpoint = (home.artifacts / "ptr_checkpoint" / "latest").resolve()
        result = run(strict)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "kept 0 of 6 rows (dropped {'answer_too_short': 6}); nothing was written" in str(failure)
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert not materialized & {
        "filter_decisions",
        "ptr_dataset",
        "ptr_dataset_hf",
        "ptr_checkpoint",
    }
    assert pq.read_table(home.artifacts / "ptr_dataset" / "latest.parquet").equals(good)
    assert (home.artifacts / "ptr_checkpoint" / "latest").resolve() == checkpoint
