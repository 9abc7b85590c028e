"""Ablations of PTR in the miniature world: one table, every row with 95% intervals.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablations.py [--only no_thought_mask ...]

Runs ``ptr_full_job`` through the Dagster CLI once with the defaults (the demo) and once per
config in ``ptr_pipeline/configs/ablations/`` (each a few fields over the defaults: the paper's
generic refine turn, thought mask off, linear beta_t, no consistency filter, one weak thought,
two strong rounds, SFT pairs mixed in, the paper's three-term loss, on-policy drafts), all on one
``PTR_HOME`` so the world's models, and every stage an ablation does not change, are reused from
the cache. After each run it reads that run's ``eval_scores`` and prints, pooled over the world's
tasks that carry signal (``evaluation.chance.RULE``; the ARC rendering is at chance): PTR at round
1 and at its last round, and the paired differences last - round 1, last - base round 1, last -
SFT round 1 and SFT round 1 itself (paired bootstrap, 95%). One fine-tuning seed per row: the seed
table (benchmarks/world_seeds.py) shows how far one seed moves.

Run it from the repository root (the sft_mixing config names a bundled file by its path). Not
part of ``make test`` (each ablation retrains and re-evaluates: minutes). The measured table is in
docs/results.md.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ptr_pipeline.evaluation import compare, examples_from_table, summarize, task_signals
from ptr_pipeline.samples import WORLD_EVAL_SOURCES

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "ptr_pipeline" / "configs"
DAGSTER = str(Path(sys.executable).parent / "dagster")
# Only the world's tasks (the other eight read bundled samples the world's models never learned).
WORLD_TASKS = list(WORLD_EVAL_SOURCES)
WORLD_RANGE = {
    "dagster/asset_partition_range_start": WORLD_TASKS[0],
    "dagster/asset_partition_range_end": WORLD_TASKS[-1],
}


def run(name: str, configs: list[Path], ptr_home: Path, dagster_home: Path) -> pa.Table:
    """``ptr_full_job`` over the world's tasks with ``configs`` (run-config files) added; the
    eval scores it wrote (the next run replaces ``latest``). Exits naming ``name`` on failure."""
    argv = [DAGSTER, "job", "execute", "-m", "ptr_pipeline.definitions", "-j", "ptr_full_job",
            "-c", str(CONFIGS / "console.yaml"), "--tags", json.dumps(WORLD_RANGE)]  # fmt: skip
    for config in configs:
        argv += ["-c", str(config)]
    env = {**os.environ, "PTR_HOME": str(ptr_home), "DAGSTER_HOME": str(dagster_home)}
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name}: the run failed\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    folder = ptr_home / "artifacts" / "eval_scores"
    return pa.concat_tables([pq.read_table(folder / t / "latest.parquet") for t in WORLD_TASKS])


def row(name: str, scores: pa.Table, eval_sets: pa.Table) -> str:
    signals = task_signals(scores, examples_from_table(eval_sets))
    pooled_tasks = {t for t, s in signals.items() if s.signal}
    summary = [r for r in summarize(scores).to_pylist() if r["task"] in pooled_tasks]
    last = max(r["round"] for r in summary)

    def pooled(role: str, round_: int) -> str:
        cells = [r for r in summary if r["model_role"] == role and r["round"] == round_
                 and r["primary"]]  # fmt: skip
        right, n = sum(r["value"] * r["n"] for r in cells), sum(r["n"] for r in cells)
        return f"{100 * right / n:.1f}"

    # "all": the tasks with signal (a single one is its own row)
    rows = compare(scores, signals).to_pylist()
    where = "all" if len(pooled_tasks) > 1 else next(iter(pooled_tasks))
    diffs = {r["comparison"]: r for r in rows if r["task"] == where}

    def diff(label: str) -> str:
        r = diffs.get(label)
        if r is None:
            return "-"
        return (f"{100 * r['difference']:+.1f} [{100 * r['ci_low']:+.1f}, "
                f"{100 * r['ci_high']:+.1f}]")  # fmt: skip

    return (f"| {name} | {'+'.join(sorted(pooled_tasks))} | {pooled('ptr', 1)} | "
            f"{pooled('ptr', last)} | {pooled('sft', 1)} | {diff(f'ptr r{last} - ptr r1')} | "
            f"{diff(f'ptr r{last} - base r1')} | {diff(f'ptr r{last} - sft r1')} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="ablation config names (default: all)")
    parser.add_argument("--ptr-home", type=Path, help="reuse a PTR_HOME (its world, its caches)")
    args = parser.parse_args()
    ptr_home = args.ptr_home or Path(tempfile.mkdtemp(prefix="ptr-ablations-"))
    dagster_home = Path(tempfile.mkdtemp(prefix="dagster-ablations-"))
    (dagster_home / "dagster.yaml").write_text((REPO / "instance" / "dagster.yaml").read_text())
    configs = sorted((CONFIGS / "ablations").glob("*.yaml"))
    if args.only:
        configs = [c for c in configs if c.stem in args.only]
    lines = [
        "| run | tasks pooled | PTR round 1 (%) | PTR last round (%) | SFT round 1 (%) | "
        "last - round 1 | last - base round 1 | last - SFT round 1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    eval_sets = ptr_home / "artifacts" / "eval_sets" / "latest.parquet"
    for name, config in [("PTR (defaults)", None), *((c.stem, c) for c in configs)]:
        scores = run(name, [config] if config else [], ptr_home, dagster_home)
        lines.append(row(name, scores, pq.read_table(eval_sets)))
        print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
