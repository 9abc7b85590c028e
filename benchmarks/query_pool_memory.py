"""Peak memory and wall time of the query pool build on corpora of millions of queries.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/query_pool_memory.py [--sizes 1000000 4000000]
        [--seed 0] [--baseline] [--folder DIR]

For each size, writes a synthetic JSON Lines file of that many queries (seeded: 10 to 80 words
drawn from 20,000 made-up words, a fifth of them with numbers; about 8% exact copies of an
earlier query in other case and spacing, 8% near copies with one word changed or appended, and
0.1% that contain an eval question), then builds the pool from it in a child process (near-dup
on, no max_queries, decontaminated against every item of the default eval_sets, as the asset
does) and measures the child's peak resident memory with ``/usr/bin/time -v`` (psutil polling
when it is missing) and its wall time. Prints a table, the ratio of the largest size's peak to
the smallest's, and the issue's goals (1M rows under 1 GiB; 4M at most 1.5x the memory of 1M).

``--baseline`` also runs the code before the streaming pool (commit 2616cc2, exported with
``git archive`` into a temp folder, so no worktree is touched) on the smallest size's file: it
reads every record into memory and holds the pool as Python rows, then writes the table as its
IO manager did. Not part of ``make test`` (minutes per size). The measured figures are in the
README.
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "2616cc2"
TIME = Path("/usr/bin/time")


def generate(path: Path, rows: int, seed: int, questions: list[str]) -> dict[str, int]:
    """Write the synthetic corpus; returns how many rows of each kind it holds."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bdklmnrstv" for v in "aeiou"]
    vocabulary: list[str] = []
    seen: set[str] = set()
    while len(vocabulary) < 20_000:
        word = "".join(rng.choices(syllables, k=rng.randint(1, 4)))
        if word not in seen:
            seen.add(word)
            vocabulary.append(word)
    recent: list[str] = []  # a ring of recent originals to copy from (the file is not held)
    counts = {"original": 0, "exact_copy": 0, "near_copy": 0, "contaminated": 0}
    with path.open("w", encoding="utf-8") as f:
        for _ in range(rows):
            draw = rng.random()
            if recent and draw < 0.08:
                text = "  " + rng.choice(recent).upper().replace(" ", "  ")
                counts["exact_copy"] += 1
            elif recent and draw < 0.16:
                words = rng.choice(recent).split(" ")
                if rng.random() < 0.5:
                    words[rng.randrange(len(words))] = rng.choice(vocabulary)
                else:
                    words.append(rng.choice(vocabulary))
                text = " ".join(words)
                counts["near_copy"] += 1
            elif draw < 0.161:
                text = f"{' '.join(rng.choices(vocabulary, k=6))} {rng.choice(questions)}"
                counts["contaminated"] += 1
            else:
                words = rng.choices(vocabulary, k=rng.randint(10, 80))
                if rng.random() < 0.2:
                    words.insert(rng.randrange(len(words)), str(rng.randint(1, 10_000)))
                text = " ".join(words).capitalize() + rng.choice(".?!")
                counts["original"] += 1
                if len(recent) < 20_000:
                    recent.append(text)
                else:
                    recent[rng.randrange(len(recent))] = text
            f.write(json.dumps({"instruction": text}) + "\n")
    return counts


def eval_questions() -> list[str]:
    from ptr_pipeline.evaluation import TASKS, EvalSetSettings

    settings = EvalSetSettings()
    return [e.question for task in TASKS for e in settings.load(task)]


def child(source: str, output: str) -> None:
    """Build the pool once, in this process (the code found on sys.path: new or baseline)."""
    import psutil
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ptr_pipeline import queries
    from ptr_pipeline.evaluation import TASKS, EvalSetSettings, examples_table

    started = time.perf_counter()
    loaded = EvalSetSettings()
    items = pa.concat_tables([examples_table(t, loaded.load(t)) for t in TASKS])
    before = psutil.Process().memory_info().rss / 2**20  # imports and eval items, before the build
    settings = queries.QueryPoolSettings(source=source, max_queries=None)
    if "near_dup" in queries.QueryPoolSettings.model_fields:  # the streaming pool
        assert settings.near_dup
        result = queries.build_query_pool(
            settings, Path(output), items.select(["task", "example_id", "question"])
        )
        rows, dropped = result.rows, result.dropped
    else:  # the baseline: a table in memory, written as its IO manager did
        table, dropped = queries.build_query_pool(settings, items.column("question").to_pylist())
        pq.write_table(table, output)
        rows = table.num_rows
    seconds = time.perf_counter() - started
    result = {"rows": rows, "dropped": dropped, "build_seconds": round(seconds, 1)}
    print(json.dumps({**result, "rss_before_build_mib": round(before, 1)}))


def measure(source: Path, output: Path, pythonpath: Path) -> dict:
    """Run ``child`` in a fresh interpreter; its result, peak RSS (MiB) and wall seconds."""
    command = [sys.executable, __file__, "--child", str(source), str(output)]
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    if TIME.exists():
        done = subprocess.run(
            [str(TIME), "-v", *command], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"the build failed:\n{done.stderr[-3000:]}")
        kib = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        peak = int(kib.group(1)) / 1024 if kib else float("nan")
        stdout = done.stdout
    else:  # psutil: poll the child's RSS every 50 ms
        import psutil

        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        watched, peak = psutil.Process(process.pid), 0.0
        while process.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        stdout = process.stdout.read() if process.stdout else ""
        if process.returncode != 0:
            raise RuntimeError("the build failed")
    wall = time.perf_counter() - started
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "peak_mib": round(peak, 1), "wall_seconds": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", action="store_true", help=f"also run {BASELINE_COMMIT}")
    parser.add_argument("--folder", type=Path, help="where the files go (default: a temp dir)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    folder = args.folder or Path(tempfile.mkdtemp(prefix="query_pool_memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    questions = eval_questions()
    results = []
    try:
        for size in sorted(args.sizes):
            source = folder / f"queries-{size}.jsonl"
            started = time.perf_counter()
            counts = generate(source, size, args.seed, questions)
            mib = source.stat().st_size / 2**20
            print(f"{size:,} rows: {mib:,.0f} MiB written in {time.perf_counter() - started:.0f} s"
                  f" {counts}", flush=True)  # fmt: skip
            run = measure(source, folder / f"pool-{size}.parquet", REPO)
            results.append(("streaming", size, mib, run))
            print(f"  streaming pool: {run}", flush=True)
            if args.baseline and size == min(args.sizes):
                old = folder / "baseline"
                shutil.rmtree(old, ignore_errors=True)
                old.mkdir()
                archive = subprocess.run(
                    ["git", "-C", str(REPO), "archive", BASELINE_COMMIT, "ptr_pipeline"],
                    capture_output=True,
                    check=True,
                )
                subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
                run = measure(source, folder / f"baseline-{size}.parquet", old)
                results.append((f"before ({BASELINE_COMMIT})", size, mib, run))
                print(f"  baseline: {run}", flush=True)
            os.unlink(source)
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    print("\n| code | rows | input MiB | kept | peak RSS MiB | RSS before the build | wall s |")
    print("|---|---|---|---|---|---|---|")
    for code, size, mib, run in results:
        print(f"| {code} | {size:,} | {mib:,.0f} | {run['rows']:,} | {run['peak_mib']:,.0f} | "
              f"{run['rss_before_build_mib']:,.0f} | {run['wall_seconds']:,.0f} |")  # fmt: skip
    streaming = {size: run for code, size, _, run in results if code == "streaming"}
    small, large = min(streaming), max(streaming)
    if large != small:
        ratio = streaming[large]["peak_mib"] / streaming[small]["peak_mib"]
        print(f"\npeak RSS {large:,} / {small:,} rows: {ratio:.2f}x (goal for 4M/1M: <= 1.5x)")
    if 1_000_000 in streaming:
        peak = streaming[1_000_000]["peak_mib"]
        print(f"1M rows with near-dup: {peak:,.0f} MiB peak RSS (goal: under 1024 MiB)")


if __name__ == "__main__":
    main()
