"""Command line: ``python -m ptr_pipeline report`` prints where the artifacts are and the scores.

The pipeline itself runs through Dagster (``dagster job execute -m ptr_pipeline.definitions -j
ptr_full_job``, or the UI); this command only reads what it wrote under $PTR_HOME.
"""

import argparse
import sys

import pyarrow.parquet as pq

from ptr_pipeline.evaluation.rounds import summary_markdown
from ptr_pipeline.home import default_root

ASSETS = ["query_pool", "weak_thoughts", "strong_refinements", "filter_decisions", "ptr_dataset"]


def report(root) -> int:
    artifacts = root / "artifacts"
    print(f"Artifacts under {artifacts}")
    for name in ASSETS:
        path = artifacts / name / "latest.parquet"
        if path.exists():
            print(f"  {name:<20} {path}  {pq.read_metadata(path).num_rows} rows")
        else:
            print(f"  {name:<20} (not materialized)")
    checkpoint = artifacts / "ptr_checkpoint" / "latest"
    print(
        f"  {'ptr_checkpoint':<20} {checkpoint.resolve() if checkpoint.exists() else '(not materialized)'}"
    )
    summary = artifacts / "eval_summary" / "latest.parquet"
    if not summary.exists():
        print("No eval_summary yet: materialize eval_scores and eval_summary.")
        return 1
    print("\nAccuracy (%) per task and refinement round:\n")
    table = pq.read_table(summary)
    print(summary_markdown(table))
    print("\nResponses with an extractable answer (%):\n")
    print(summary_markdown(table, "answered"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ptr_pipeline", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("report", help="artifact paths and the per-task, per-round score table")
    parser.parse_args(argv)
    return report(default_root())


if __name__ == "__main__":
    sys.exit(main())
