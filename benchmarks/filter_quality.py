"""Precision and recall of the consistency filter on the labelled progressions, per rule.

The labelled set (``ptr_pipeline_tests/filtering/progressions.jsonl``) holds handcrafted
progressions in English and Chinese, each with the verdict it deserves: ``keep`` or the first rule
that should drop it (the rules and their order: ``filtering/consistency.py``). It was written from
the rules' definitions alone, without the filter's code.

The thresholds are calibrated on half of the set (ids ending in an odd number) and reported on
the other half as well as on all of it, so the held-out figures are not tuned to the rows they
score. ``--sweep`` prints the calibration grid.

    python benchmarks/filter_quality.py [--embedding-model MODEL] [--sweep]
"""

import argparse
import itertools
from collections import Counter

from ptr_pipeline.filtering import REASONS, FilterSettings, judge_progressions
from ptr_pipeline.filtering.consistency import drop_reason
from ptr_pipeline_tests.filtering import labelled

GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def load() -> list[dict]:
    """The labelled progressions, with ``calibration`` True for the calibration half."""
    rows = labelled.load()
    for r in rows:
        r["calibration"] = int(r["id"].rsplit("-", 1)[1]) % 2 == 1
    return rows


def scored(rows: list[dict], settings: FilterSettings) -> list[dict]:
    """Every row scored by the filter (``schemas.FILTER_DECISIONS`` rows), in order."""
    progressions = labelled.progressions(rows)
    return judge_progressions(progressions, settings).decisions.to_pylist()


def verdicts(decisions: list[dict], settings: FilterSettings, measure: str) -> list[str]:
    """The filter's verdict per scored row at ``settings``: ``keep`` or its drop reason."""
    return [drop_reason(row, settings, measure) or "keep" for row in decisions]


def scores(expected: list[str], got: list[str]) -> dict[str, dict[str, float | int | None]]:
    """Per rule (and ``drop``: any rule, and ``keep``): precision, recall and support."""
    out = {}
    for label in (*REASONS, "drop", "keep"):

        def hit(v: str, label: str = label) -> bool:
            return v != "keep" if label == "drop" else v == label

        tp = sum(hit(e) and hit(g) for e, g in zip(expected, got, strict=True))
        predicted, actual = sum(map(hit, got)), sum(map(hit, expected))
        out[label] = {
            "precision": round(tp / predicted, 3) if predicted else None,
            "recall": round(tp / actual, 3) if actual else None,
            "support": actual,
        }
    return out


def accuracy(expected: list[str], got: list[str]) -> float:
    return sum(e == g for e, g in zip(expected, got, strict=True)) / len(expected)


def calibrate(
    rows: list[dict], decisions: list[dict], base: FilterSettings, measure: str, show: bool
) -> tuple[float, float]:
    """The (min_step_similarity, min_query_similarity) with the best verdict accuracy on the
    calibration half (ties: the lowest thresholds, which drop least)."""
    half = [(r, d) for r, d in zip(rows, decisions, strict=True) if r["calibration"]]
    expected = [r["expected"] for r, _ in half]
    scores_ = [d for _, d in half]
    best = None
    for step, query in itertools.product(GRID, GRID):
        settings = base.model_copy(
            update={"min_step_similarity": step, "min_query_similarity": query}
        )
        acc = accuracy(expected, verdicts(scores_, settings, measure))
        if show:
            print(f"  step {step:<5} query {query:<5} accuracy {acc:.3f}")
        if best is None or acc > best[0]:
            best = (acc, step, query)
    assert best is not None
    print(
        f"calibration half ({len(half)} rows): best accuracy {best[0]:.3f} at "
        f"min_step_similarity={best[1]}, min_query_similarity={best[2]}"
    )
    return best[1], best[2]


def table(title: str, rows: list[dict], settings: FilterSettings, measure: str) -> None:
    expected = [r["expected"] for r in rows]
    got = verdicts([r["scored"] for r in rows], settings, measure)
    print(f"\n{title}: {len(rows)} rows, verdict accuracy {accuracy(expected, got):.3f}")
    print("| rule | precision | recall | support |\n|---|---|---|---|")
    for label, s in scores(expected, got).items():
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"| {label} | {fmt(s['precision'])} | {fmt(s['recall'])} | {s['support']} |")
    confusions = Counter((e, g) for e, g in zip(expected, got, strict=True) if e != g)
    if confusions:
        print(
            "misjudged (expected -> got): "
            + ", ".join(f"{e} -> {g} x{n}" for (e, g), n in confusions.most_common())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--embedding-model", default=None)
    parser.add_argument("--sweep", action="store_true", help="print the calibration grid")
    args = parser.parse_args()
    rows = load()
    settings = FilterSettings(embedding_model=args.embedding_model)
    measure = "embedding" if args.embedding_model else "lexical"
    counts = Counter(r["language"] for r in rows)
    print(f"labelled progressions: {len(rows)} ({dict(counts)}); measure: {measure}")
    decisions = scored(rows, settings)  # scored once, on every row; the rules re-applied below
    for r, d in zip(rows, decisions, strict=True):
        r["scored"] = d
    calibrate(rows, decisions, settings, measure, args.sweep)
    print(
        "defaults: min_step_similarity="
        f"{settings.threshold('min_step_similarity', measure)}, min_query_similarity="
        f"{settings.threshold('min_query_similarity', measure)}, max_repetition="
        f"{settings.max_repetition}"
    )
    held_out = [r for r in rows if not r["calibration"]]
    table("held-out half, at the defaults", held_out, settings, measure)
    table("all rows, at the defaults", rows, settings, measure)
    for language in sorted(counts):
        subset = [r for r in rows if r["language"] == language]
        table(f"{language} rows, at the defaults", subset, settings, measure)


if __name__ == "__main__":
    main()
