"""Ablations of PTR in the miniature world: one table, every row with 95% intervals.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablations.py [--only no_thought_mask ...]

Runs ``ptr_full_job`` through the Dagster CLI once with the defaults (the demo) and once per
config in ``ptr_pipeline/configs/ablations/`` (each a few fields over the defaults: thought mask
off, linear beta_t, no consistency filter, one weak thought, two strong rounds), all on one
``PTR_HOME`` so the world's models, and every stage an ablation does not change, are reused from
the cache. After each run it reads that run's ``eval_scores`` and prints, pooled over the world's
tasks: PTR at round 1 and at its last round, the paired difference last - 1, and the differences
against the base model's and the SFT baseline's first answers (paired bootstrap, 95%).

Not part of ``make test`` (each ablation retrains and re-evaluates: minutes). The measured table
is in the README.
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

from ptr_pipeline.evaluation import compare, summarize
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


def run(name: str, config: Path | None, ptr_home: Path, dagster_home: Path) -> pa.Table:
    argv = [DAGSTER, "job", "execute", "-m", "ptr_pipeline.definitions", "-j", "ptr_full_job",
            "-c", str(CONFIGS / "console.yaml"), "--tags", json.dumps(WORLD_RANGE)]  # fmt: skip
    if config is not None:
        argv += ["-c", str(config)]
    env = {**os.environ, "PTR_HOME": str(ptr_home), "DAGSTER_HOME": str(dagster_home)}
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name}: the run failed\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    folder = ptr_home / "artifacts" / "eval_scores"
    return pa.concat_tables([pq.read_table(folder / t / "latest.parquet") for t in WORLD_TASKS])


def row(name: str, scores: pa.Table) -> str:
    summary = summarize(scores).to_pylist()
    last = max(r["round"] for r in summary)

    def pooled(role: str, round_: int) -> str:
        cells = [r for r in summary if r["model_role"] == role and r["round"] == round_
                 and r["primary"]]  # fmt: skip
        right, n = sum(r["value"] * r["n"] for r in cells), sum(r["n"] for r in cells)
        return f"{100 * right / n:.1f}"

    diffs = {r["comparison"]: r for r in compare(scores).to_pylist() if r["task"] == "all"}

    def diff(label: str) -> str:
        r = diffs.get(label)
        if r is None:
            return "-"
        return (f"{100 * r['difference']:+.1f} [{100 * r['ci_low']:+.1f}, "
                f"{100 * r['ci_high']:+.1f}]")  # fmt: skip

    return (f"| {name} | {pooled('ptr', 1)} | {pooled('ptr', last)} | "
            f"{diff(f'ptr r{last} - ptr r1')} | {diff(f'ptr r{last} - base r1')} | "
            f"{diff(f'ptr r{last} - sft r1')} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="ablation config names (default: all)")
    parser.add_argument("--ptr-home", type=Path, help="reuse a PTR_HOME (its world, its caches)")
    args = parser.parse_args()
    ptr_home = args.ptr_home or Path(tempfile.mkdtemp(prefix="ptr-ablations-"))
    dagster_home = Path(tempfile.mkdtemp(prefix="dagster-ablations-"))
    (dagster_home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    configs = sorted((CONFIGS / "ablations").glob("*.yaml"))
    if args.only:
        configs = [c for c in configs if c.stem in args.only]
    lines = [
        "| run | PTR round 1 (%) | PTR last round (%) | last - round 1 | last - base round 1 "
        "| last - SFT round 1 |",
        "|---|---|---|---|---|---|",
        row("PTR (defaults)", run("defaults", None, ptr_home, dagster_home)),
    ]
    for config in configs:
        lines.append(row(config.stem, run(config.stem, config, ptr_home, dagster_home)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
