"""Command line: ``report`` (what the pipeline wrote, and its scores), ``refine`` (think-thrice
inference with any checkpoint) and ``score`` (pre-generated responses, judged by the eval stage's
own scorer).

The pipeline itself runs through Dagster (``dagster job execute -m ptr_pipeline.definitions -j
ptr_full_job``, or the UI); ``report`` only reads what it wrote under $PTR_HOME.

    python -m ptr_pipeline report
    python -m ptr_pipeline refine --question "What is 2 + 2?" --rounds 3
    python -m ptr_pipeline refine --file questions.jsonl --json > answers.jsonl
    python -m ptr_pipeline refine --file gsm8k.jsonl --task gsm8k --checkpoint Qwen/Qwen2-7B
    python -m ptr_pipeline score gsm8k responses.jsonl --source gsm8k_test.jsonl
"""

import argparse
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ptr_pipeline.home import default_root

ASSETS = ["query_pool", "weak_thoughts", "strong_refinements", "filter_decisions", "ptr_dataset"]
CHECKPOINTS = ["ptr_dataset_hf", "ptr_checkpoint", "sft_checkpoint"]  # versioned folders


def report(root: Path) -> int:
    """Print, from what the pipeline wrote under ``root``: the verdict (the paired differences
    that carry the claim, on the tasks that carry signal, each with its reading), the chance rule
    and each task's verdict, what the checkpoints and scores were made from (stale ones marked),
    the score tables, one item's trip and the artifacts. Everything is computed from the latest
    ``eval_scores`` partitions and ``eval_sets``, so it never lags behind them."""
    import pyarrow as pa

    from ptr_pipeline import schemas
    from ptr_pipeline.evaluation import (
        RULE,
        compare,
        comparisons_markdown,
        examples_from_table,
        signal_markdown,
        summarize,
        summary_markdown,
        task_signals,
        trip_markdown,
        verdict_markdown,
    )
    from ptr_pipeline.evaluation.chance import ordered_tasks
    from ptr_pipeline.evaluation.provenance import (
        DatasetVersions,
        checkpoint_records,
        provenance_markdown,
        scores_records,
    )

    artifacts = root / "artifacts"
    partitions = {
        p.parent.name: pq.read_table(p)
        for p in sorted((artifacts / "eval_scores").glob("*/latest.parquet"))
    }
    print(f"PTR report for {root}")
    if not partitions:
        print("\nNo eval_scores yet: materialize eval_scores (make demo).")
        _artifacts(artifacts)
        return 1
    names = schemas.EVAL_SCORES.names
    scores = pa.concat_tables(
        [t.select(names).cast(schemas.EVAL_SCORES) for t in partitions.values()]
    )
    sets = artifacts / "eval_sets" / "latest.parquet"
    examples = examples_from_table(pq.read_table(sets)) if sets.exists() else {}
    signals = task_signals(scores, examples)
    partitions = {t: partitions[t] for t in ordered_tasks(signals, partitions)}  # signal first
    with_signal = [t for t in ordered_tasks(signals) if signals[t].signal]
    at_chance = [t for t in ordered_tasks(signals) if not signals[t].signal]
    views = _checkpoint_views()
    checkpoints = checkpoint_records(artifacts, views)
    base = artifacts / "base_model" / "latest.parquet"
    base_model = pq.read_table(base).column("model")[0].as_py() if base.exists() else None
    records = scores_records(
        artifacts, partitions, checkpoints, PIPELINE_CHECKPOINTS, views, base_model
    )

    print("\n## Verdict\n")
    if with_signal:
        print(f"Tasks that carry signal: {', '.join(with_signal)}.")
    else:
        print("No task carries signal: every model scores at chance on every task, so these "
              "scores support no claim.")  # fmt: skip
    if at_chance:
        print(f"At chance, left out of every pooled figure: {', '.join(at_chance)}.")
    if not examples:
        print(f"No eval_sets at {sets}: chance levels unknown, no task assessed.")
    stale = [(what, why) for what, c in checkpoints.items() if (why := c.stale)]
    stale += [(f"eval_scores {t}", "; ".join(r.stale)) for t, r in records.items() if r.stale]
    for what, why in stale:
        print(f"STALE {what}: {why}")
    comparisons = compare(scores, signals)
    if with_signal:
        print(
            "\nPaired differences, in points of each task's primary metric, over the same items "
            '[paired bootstrap 95% interval]; "all" pools the items of the tasks with signal:\n'
        )
        print(verdict_markdown(comparisons))
        seed = _training_seed(checkpoints.get("ptr_checkpoint"))
        print(
            f"\nOne fine-tuning run (fine_tune.seed {seed}): in the miniature world, PTR's and "
            "SFT's scores move by several points between seeds, more than one run's intervals "
            "cover. The spread over seeds: docs/results.md (benchmarks/world_seeds.py)."
        )
    print(f"\nThe chance rule: {RULE}\n")
    print(signal_markdown(signals))

    print("\n## What the checkpoints and scores were made from\n")
    print(provenance_markdown(checkpoints, records, DatasetVersions(artifacts).latest))

    summary = summarize(scores, signals)
    print(
        "\n## Scores\n\n(%) per task (its primary metric), model and refinement round [95% "
        "interval: Wilson for 0/1 metrics, bootstrap for graded ones]; n: items (per round where "
        "rounds differ); chance: the chance level of the model's round-1 items; tasks with "
        "signal first:\n"
    )
    print(summary_markdown(summary))
    others = summary.filter(pc.invert(summary.column("primary")))
    if others.num_rows:
        print("\nThe tasks' other metrics (%):\n")
        print(summary_markdown(others, every_metric=True))
    print("\nResponses with an extractable answer (%):\n")
    print(summary_markdown(summary, "answered"))
    print("\nFlips against the previous round (items wrong->right / right->wrong):\n")
    print(summary_markdown(summary, "flips"))
    print(
        "\nEvery paired difference [paired bootstrap 95% interval]; better/worse: items a scores "
        "above/below b:\n"
    )
    print(comparisons_markdown(comparisons))

    shown = with_signal or ordered_tasks(signals)
    trip_scores = scores.filter(pc.is_in(scores.column("task"), pa.array(shown)))
    print(
        "\n## One held-out item, round by round\n\nFrom a task with signal: one PTR got wrong "
        "at round 1 and right at its last round, else one whose PTR answer changes:\n"
    )
    print(trip_markdown(trip_scores, tasks=shown))
    _artifacts(artifacts)
    return 0


def _training_seed(record) -> str:
    """The ``fine_tune.seed`` a checkpoint record's manifest names, or "unknown"."""
    from ptr_pipeline.storage import CHECKPOINT_MANIFEST

    manifest = record.path / CHECKPOINT_MANIFEST if record is not None else None
    if manifest is None or not manifest.is_file():
        return "unknown"
    return str(json.loads(manifest.read_text()).get("settings", {}).get("seed", "unknown"))


def _artifacts(artifacts: Path) -> None:
    print(f"\n## Artifacts under {artifacts}\n")
    for name in ASSETS:
        path = artifacts / name / "latest.parquet"
        if path.exists():
            print(f"  {name:<20} {path}  {pq.read_metadata(path).num_rows} rows")
        else:
            print(f"  {name:<20} (not materialized)")
    for name in CHECKPOINTS:
        link = artifacts / name / "latest"
        print(f"  {name:<20} {link.resolve() if link.exists() else '(not materialized)'}")
    decisions = artifacts / "filter_decisions" / "latest.parquet"
    if decisions.exists():
        reasons = Counter(pq.read_table(decisions, columns=["drop_reason"]).column(0).to_pylist())
        kept = reasons.pop(None, 0)
        dropped = ", ".join(f"{r} {n}" for r, n in reasons.most_common()) or "none"
        print(
            f"  consistency filter   kept {kept} of {kept + sum(reasons.values())}; dropped: {dropped}"
        )
    for figure in sorted(artifacts.glob("*/*.png")):
        print(f"  {'figure':<20} {figure}")


def refine_command(args: argparse.Namespace, root: Path) -> int:
    from ptr_pipeline.conversation import ChatFormat, PromptTooLongError, check_refine_turn
    from ptr_pipeline.engines import Sampling, make_generator
    from ptr_pipeline.evaluation.rounds import refine
    from ptr_pipeline.evaluation.tasks import TASKS, load_examples
    from ptr_pipeline.models import default_refine_turn
    from ptr_pipeline.out_of_world import refine_note
    from ptr_pipeline.records import InputError, read_records

    checkpoint, problem = _checkpoint(args.checkpoint or "ptr", root)
    if checkpoint is None:
        print(f"error: --checkpoint {args.checkpoint or 'ptr'}: {problem}", file=sys.stderr)
        return 2
    if args.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        print("error: --backend vllm: vllm is not installed (pip install -e '.[vllm]')",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"error: --device {args.device}: this torch has no CUDA device", file=sys.stderr)
            return 2
    golds: list[str | None]
    examples = []
    try:
        if args.question is not None:
            prompts, golds = [args.question], [None]
        elif args.task:
            examples = load_examples(args.task, args.file, args.limit)
            prompts, golds = [e.prompt for e in examples], [e.gold for e in examples]
        else:
            records = read_records(args.file)[: args.limit]
            prompts = [r.text(args.field) for r in records]
            golds = [None] * len(prompts)
    except InputError as e:  # names the file, row and field: one line is enough
        print(f"error: {e}", file=sys.stderr)
        return 2
    where = args.file or "--question"
    model = checkpoint
    try:  # a folder that is no model, or a hub id that cannot be fetched: one line, no traceback
        chat_format = ChatFormat.from_pretrained(model)
    except (OSError, ValueError) as e:
        print(f"error: --checkpoint {checkpoint}: {str(e).strip().splitlines()[0]}",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.refine_turn is not None:
        try:
            turn, turn_source = check_refine_turn(args.refine_turn), "--refine-turn"
        except ValueError as e:
            print(f"error: --refine-turn: {e}", file=sys.stderr)
            return 2
    else:
        turn, turn_source = default_refine_turn(model)
    queries = [e.query for e in examples] if examples else prompts  # shots are not restated
    try:  # every question checked against the context before the weights load
        chat_format.check_fits(
            [(f"{where}, question {i + 1}", [{"role": "user", "content": p}], q)
             for i, (p, q) in enumerate(zip(prompts, queries, strict=True))],
            args.rounds, args.max_new_tokens, turn,
        )  # fmt: skip
    except PromptTooLongError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"answering with {_describe_checkpoint(args.checkpoint or 'ptr', model, root)}",
        file=sys.stderr,
    )
    note = refine_note(args.checkpoint or "ptr", model, prompts)  # a world model, other questions
    if note:
        print(note, file=sys.stderr)
    if args.rounds > 1:
        print(f"refine turn {turn!r} ({turn_source})", file=sys.stderr)
    generator = make_generator(args.backend, model, device=args.device, batch_size=args.batch_size)
    stop = TASKS[args.task].stop if args.task else ()
    answers = refine(
        prompts, generator, args.rounds, turn,
        Sampling(n=1, temperature=0.0, max_new_tokens=args.max_new_tokens, stop=stop), queries,
    )  # fmt: skip
    for i, (prompt, rounds, gold) in enumerate(zip(prompts, answers, golds, strict=True)):
        extracted = (
            [TASKS[args.task].judge(a, examples[i]).extracted for a in rounds]
            if args.task
            else None
        )
        if args.json:
            line = {"question": prompt, "rounds": rounds}
            if args.task:
                line |= {"extracted": extracted, "gold": gold}
            print(json.dumps(line, ensure_ascii=False), flush=True)
            continue
        print(f"[{i + 1}] {prompt}")
        for k, answer in enumerate(rounds, start=1):
            mark = f"   (extracted {extracted[k - 1]!r}, gold {gold!r})" if args.task else ""
            print(f"  round {k}: {answer}{mark}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ptr_pipeline", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("report", help="artifact paths, figures, score tables, paired differences")
    sc = sub.add_parser(
        "score",
        help="judge pre-generated responses with the eval stage's own scorer: the metric with its "
        "95%% interval per round, and per-item judgments as JSONL",
    )
    sc.add_argument("task", choices=sorted(_task_names()))
    sc.add_argument(
        "responses",
        help="JSONL/JSON/Parquet rows: the response text, the item's id (or rows in item order), "
        "optionally the round",
    )
    sc.add_argument("--source", help="the items (any layout the eval stage reads; default: the "
                    "eval stage's default, the world's set for gsm8k and arc, else the bundled "
                    "sample)")  # fmt: skip
    sc.add_argument("--split", help="--source: the split of a folder")
    sc.add_argument("--extraction", choices=["strict", "flexible"],
                    help="answer extraction (default: the task's)")  # fmt: skip
    sc.add_argument("--response-field", default="response")
    sc.add_argument("--model-role", help="keep the rows of this model_role only (to score an "
                    "eval_scores file, which holds base, sft and ptr)")  # fmt: skip
    sc.add_argument("--out", help="per-item judgments (default: RESPONSES with .judgments.jsonl)")
    r = sub.add_parser(
        "refine",
        help="think-thrice inference: every round's answer, with the renderer, refine prompt "
        "and stop tokens evaluation uses",
    )
    given = r.add_mutually_exclusive_group(required=True)
    given.add_argument("--question", help="one question, asked as the user turn")
    given.add_argument(
        "--file", help="questions: any file the pipeline reads (JSONL, Parquet, ...)"
    )
    r.add_argument(
        "--checkpoint",
        help="ptr or sft (the pipeline's latest ptr_checkpoint / sft_checkpoint; default ptr), "
        "world:<role> or tiny:<name>, a checkpoint folder, or a hub id in the local Hugging Face "
        "cache",
    )
    r.add_argument("--rounds", type=int, default=3, help="refinement rounds (default 3)")
    r.add_argument("--field", default="question", help="--file: the field holding the question")
    r.add_argument("--task", choices=sorted(_task_names()),
                   help="--file is in this eval task's schema: prompt as evaluation does, and "
                   "show the extracted answer and the gold")  # fmt: skip
    r.add_argument("--limit", type=_positive, help="--file: the first N questions")
    r.add_argument("--json", action="store_true", help="one JSON line per question")
    r.add_argument(
        "--refine-turn",
        help="the user turn before rounds > 1 ({query} = the question); default: the turn the "
        "checkpoint was trained with (its manifest), else re-reading for the world's models, "
        "else the paper's generic turn",
    )
    r.add_argument("--max-new-tokens", type=_positive, default=64)
    r.add_argument("--batch-size", type=_positive, default=16)
    r.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (transformers)")
    args = parser.parse_args(argv)
    if args.command == "report":
        return report(default_root())
    if args.command == "score":
        return score_command(args)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.task and not args.file:
        parser.error("--task needs --file")
    from ptr_pipeline.notices import quiet_deepspeed

    quiet_deepspeed()  # saving a built model imports DeepSpeed, which warns on a CPU machine
    return refine_command(args, default_root())


ID_FIELDS = ("example_id", "id", "task_id", "query_id", "unique_id", "Record ID")


def score_command(args: argparse.Namespace) -> int:
    """Judge pre-generated responses exactly as the eval stage does (``evaluation.judge_rows``)."""
    from ptr_pipeline.evaluation import (
        TASKS,
        EvalSetSettings,
        judge_rows,
        summarize,
        summary_markdown,
    )
    from ptr_pipeline.evaluation.tasks import read_examples
    from ptr_pipeline.records import InputError, read_records

    source = args.source or EvalSetSettings().eval_sources.get(args.task)
    try:
        examples = read_examples(args.task, source, args.split)
        rows = read_records(args.responses)
        if args.model_role:
            rows = [r for r in rows if r.get("model_role") == args.model_role]
            if not rows:
                raise InputError(f"{args.responses}: no row of model_role {args.model_role!r}")
        answers = _responses_by_item(rows, examples, args.response_field)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    extraction = args.extraction or TASKS[args.task].extraction
    scores = judge_rows(args.task, examples, answers, extraction, "responses", args.responses)
    out = Path(args.out or Path(args.responses).with_suffix(".judgments.jsonl"))
    with out.open("w", encoding="utf-8") as f:
        for r in scores.to_pylist():
            line = {k: r[k] for k in ("example_id", "round", "response", "extracted", "gold",
                                      "correct", "detail")}  # fmt: skip
            line["metrics"] = dict(r["metrics"])
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    judged = sum(len(a) for a in answers)
    print(f"{args.task}: {judged} responses to {sum(1 for a in answers if a)} of "
          f"{len(examples)} items, extraction {extraction}\n")  # fmt: skip
    print(summary_markdown(summarize(scores), every_metric=True))
    print(f"\nper-item judgments: {out}")
    return 0


def _responses_by_item(rows, examples, field: str) -> list[list[str]]:
    """rows -> one list per item of its responses by round (round 1 first). Rows name the item
    by one of ``ID_FIELDS``, or are in item order (per round)."""
    from ptr_pipeline.records import InputError

    index = {e.id: i for i, e in enumerate(examples)}
    by_item: list[dict[int, str]] = [{} for _ in examples]
    next_in_round: dict[int, int] = {}
    for r in rows:
        response = r.text(field)
        round_ = r.get("round", 1)
        if isinstance(round_, bool) or not isinstance(round_, int) or round_ < 1:
            raise r.error(f"expected a round number >= 1, got {round_!r}", "round")
        id_field = next((f for f in ID_FIELDS if r.has(f)), None)
        if id_field is not None:
            item_id = str(r.get(id_field))
            if item_id not in index:
                raise r.error(f"no item {item_id!r} in the source", id_field)
            i = index[item_id]
        else:
            i = next_in_round.get(round_, 0)
            if i >= len(examples):
                raise r.error(f"more round-{round_} responses than the {len(examples)} items")
            next_in_round[round_] = i + 1
        if round_ in by_item[i]:
            raise r.error(f"a second round-{round_} response to item {examples[i].id!r}")
        by_item[i][round_] = response
    out = []
    for i, responses in enumerate(by_item):
        rounds = sorted(responses)
        if rounds != list(range(1, len(rounds) + 1)):
            raise InputError(f"item {examples[i].id!r}: responses to rounds {rounds}; rounds "
                             "must run 1, 2, ... without gaps")  # fmt: skip
        out.append([responses[k] for k in rounds])
    if not any(out):
        raise InputError("no response")
    return out


PIPELINE_CHECKPOINTS = {"ptr": "ptr_checkpoint", "sft": "sft_checkpoint"}


def _checkpoint(spec: str, root: Path) -> tuple[str | None, str]:
    """What ``refine --checkpoint spec`` loads, or None and why not (one line, before any
    weights load): ``ptr``/``sft`` (the pipeline's latest checkpoints under ``root``), a
    ``world:`` or ``tiny:`` model (tiny models are built now, in seconds; a world model must have
    been built by the models assets), a model folder, or a hub id already in the local Hugging
    Face cache (nothing is downloaded)."""
    from ptr_pipeline.models import TINY_PREFIX, WORLD_PREFIX, check_model_spec, resolve_model
    from ptr_pipeline.world.recipe import WorldRecipe, world_folder

    if spec in PIPELINE_CHECKPOINTS:
        asset = PIPELINE_CHECKPOINTS[spec]
        link = root / "artifacts" / asset / "latest"
        if not link.exists():
            return None, f"no {asset} under {root / 'artifacts'}: materialize it (make demo)"
        return str(link.resolve()), ""
    try:
        check_model_spec(spec)
    except ValueError as e:
        return None, str(e)
    if spec.startswith(TINY_PREFIX):
        return resolve_model(spec, root / "models"), ""
    if spec.startswith(WORLD_PREFIX):
        folder = world_folder(root / "models", WorldRecipe()) / spec.removeprefix(WORLD_PREFIX)
        if not folder.is_dir():
            return None, (
                f"not built under {root / 'models'} yet; materialize the models assets "
                "(make demo) first"
            )
        return str(folder), ""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return None, "not a model folder (no config.json)"
        return str(path.resolve()), ""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not a valid repo id
        cached = None
    if not isinstance(cached, str):
        names = ", ".join(PIPELINE_CHECKPOINTS)
        return None, (
            f"no such folder, not one of {names}, world:<role> or tiny:<name>, and not in the "
            f"local Hugging Face cache (download it first: hf download {spec})"
        )
    return spec, ""


def _checkpoint_views() -> dict:
    """checkpoint asset -> the rows of a ``ptr_dataset`` table it trains on (provenance's views)."""
    from ptr_pipeline.training import sft_rows

    return {"ptr_checkpoint": lambda table: table, "sft_checkpoint": sft_rows}


def _describe_checkpoint(spec: str, model: str, root: Path) -> str:
    """One line: which checkpoint answers, and what it was trained from (its manifest; for the
    pipeline's own ``ptr``/``sft``, the ``ptr_dataset`` version the report names, stale marked)."""
    from ptr_pipeline.evaluation.provenance import checkpoint_records
    from ptr_pipeline.storage import CHECKPOINT_MANIFEST

    manifest = Path(model) / CHECKPOINT_MANIFEST
    text = f"{spec}: {model}"
    if not manifest.is_file():
        return text
    content = json.loads(manifest.read_text())
    if content.get("world_role"):
        return f"{text} (the world's {content['world_role']} model, step {content.get('step')})"
    if not content.get("dataset_fingerprint"):
        return text
    made_from = f"training rows {content['dataset_fingerprint'][:16]}"  # not a stored version
    asset = PIPELINE_CHECKPOINTS.get(spec)
    if asset is not None:
        record = checkpoint_records(root / "artifacts", _checkpoint_views()).get(asset)
        if record is not None and record.dataset_version is not None:
            made_from = f"ptr_dataset {record.dataset_version}"
            if record.stale:
                made_from += f"; STALE: {record.stale}"
    return f"{text} (fine-tuned from {content.get('base_model')} on {made_from})"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _task_names() -> list[str]:
    from ptr_pipeline.evaluation.tasks import TASKS

    return list(TASKS)


if __name__ == "__main__":
    sys.exit(main())
