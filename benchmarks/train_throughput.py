"""Training throughput of our trainer against TRL's ``SFTTrainer``: same model, rows and steps.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/train_throughput.py [--quick] [--repeats 3]
        [--steps 6] [--rows 128] [--micro-batch 8] [--max-seq-len 512] [--threads 2] [--work DIR]

Builds once in ``--work`` (default: a temp folder) a randomly initialised Llama (hidden 512, 8
layers, 8 heads, intermediate 1376, the tiny tokenizer's vocabulary: about 26.6M parameters) and
``--rows`` synthetic PTR rows of mixed length (seeded: a query, 1 to 3 thoughts, an answer;
60 to 480 tokens as rendered). Then trains, alternately, ours (``train_in_subprocess``, a fresh
work folder each run, so nothing is reused) and TRL's ``SFTTrainer`` (this script as a child
process), ``--repeats`` times each, in two configurations:

1. defaults: each trainer at its own defaults; only the micro-batch (rows), optimizer steps,
   learning rate, seed and precision (fp32) are matched. TRL's defaults then are: no packing, no
   padding-free, gradient checkpointing on, a linear learning-rate decay, fused AdamW.
2. matched: packing on for both (TRL: ``packing=True`` with its default ``bfd`` strategy, which
   forces padding-free batches), the same attention implementation, gradient checkpointing as
   ours, a constant learning rate. TRL's batch then counts packed rows of ``max_seq_len`` tokens,
   so its batch size is set to give the same tokens per step as ours (printed).

Both sides train the same objective: the cross-entropy of the answer turn only, the query and the
thoughts as context (ours: ``thought_weight`` 0; TRL: a conversational prompt-completion dataset,
the prompt holding the query, the thoughts and the refine prompts, so ``completion_only_loss``
masks everything but the answer). The figure compared is tokens/s over the training steps only:
real (non-padding) tokens of the rows trained, divided by the wall time of the training loop,
process start-up, model loading, tokenization and saving excluded on both sides (ours: the
manifest's ``train_seconds``; TRL: a callback from ``on_train_begin`` to the end of the last
step). End-to-end tokens/s (the whole child process) are printed too. Ratios are ours/TRL of the
medians. The goal: ours at least 1.3 x TRL in the matched configuration.

Not part of ``make test`` (minutes: the full run takes about 25 minutes on 2 idle cores;
``--quick`` is a smoke run of about 2 minutes). The measured figures are in the README.
"""

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IGNORE_INDEX = -100
# Made-up prose for the synthetic rows: common words and numbers, so the tiny tokenizer gives
# realistic token counts.
PROSE = (
    "the of and to in is that for it as with was on be by at this are from or have an they which "
    "one you were all we there can their has more if will would about into than when some what so "
    "time only other its also two after first then many these may how most made over such where "
    "years three any between each much people same during number without water total cost price "
    "apples students train speed hours minutes distance answer step second therefore because "
    "half twice left right sum difference product divide multiply add subtract check again"
)
WORDS = PROSE.split()
FULL = {"hidden": 512, "layers": 8, "heads": 8, "intermediate": 1376}
QUICK = {"hidden": 128, "layers": 2, "heads": 4, "intermediate": 344}


# --- inputs: model and rows, built once in --work


def build_model(work: Path, dims: dict, seed: int) -> Path:
    """A randomly initialised Llama with the tiny tokenizer, saved once under ``work``."""
    folder = work / "model-llama-h{hidden}-l{layers}-a{heads}-i{intermediate}".format(**dims)
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoModelForCausalLM

    from ptr_pipeline.models import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(dims, tokenizer))
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=".model-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.rename(tmp, folder)
    return folder


def model_config(dims: dict, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=dims["hidden"],
        intermediate_size=dims["intermediate"],
        num_hidden_layers=dims["layers"],
        num_attention_heads=dims["heads"],
        num_key_value_heads=dims["heads"],
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def parameter_count(model_path: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    return sum(p.numel() for p in model.parameters())


def make_rows(work: Path, tokenizer, rows: int, seed: int, lo: int, hi: int):
    """``rows`` PTR rows (schemas.PTR_DATASET), each aimed at a rendered length in [lo, hi]
    tokens: a query, 1-3 thoughts and an answer sharing the budget. Cached as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ptr_pipeline import schemas
    from ptr_pipeline.conversation import GENERIC_REFINE_TURN, progression

    path = work / f"rows-v3-{rows}-{seed}-{lo}-{hi}.parquet"
    if path.exists():
        return pq.read_table(path)
    rng = random.Random(seed)

    def text(budget: int, ending: str = "") -> str:
        words: list[str] = []
        while len(tokenizer(" ".join(words) + ending)["input_ids"]) < budget:
            words.append(str(rng.randint(2, 999)) if rng.random() < 0.1 else rng.choice(WORDS))
        return (" ".join(words) + ending).strip()

    def rendered(query: str, steps: list[str]) -> int:
        conversation = progression(query, steps, GENERIC_REFINE_TURN)
        return len(
            tokenizer(tokenizer.apply_chat_template(conversation, tokenize=False))["input_ids"]
        )

    out = []
    while len(out) < rows:
        n = rng.randint(1, 3)
        # Template and refine prompts: about 5 tokens a turn, 11 a refine prompt.
        budget = max(20, rng.randint(lo, hi) - 10 - 16 * n)
        query = text(max(8, budget // 5), "?")
        thoughts = [text(max(6, budget * 3 // (5 * n)), ".") for _ in range(n)]
        answer = text(max(6, budget // 5), f". The answer is {rng.randint(1, 999)}.")
        if rendered(query, [*thoughts, answer]) > hi:  # over the range: draw again
            continue
        out.append({"query_id": f"q{len(out):04d}", "query": query, "thoughts": thoughts,
                    "answer": answer, "origin": "ptr",
                    "refine_turn": GENERIC_REFINE_TURN})  # fmt: skip
    table = pa.Table.from_pylist(out, schema=schemas.PTR_DATASET)
    pq.write_table(table, path)
    return table


# --- ours


def ours_settings(args, config: str):
    from ptr_pipeline.training.settings import TrainSettings

    common = {
        "max_steps": args.steps,
        "num_epochs": -(-args.steps * args.micro_batch // args.rows) + 1,  # never the cap
        "micro_batch_size": args.micro_batch,
        "max_seq_len": args.max_seq_len,
        "learning_rate": args.lr,
        "precision": "fp32",
        "save_steps": None,  # no resumable checkpoint inside the timed loop (TRL: save "no")
    }
    if config == "defaults":
        return TrainSettings(**common)
    return TrainSettings(**common, packing=True)


def ours_plan_tokens(dataset, settings, model_path: Path) -> dict:
    """Real and supervised tokens of the rows our trainer trains (its own step plan)."""
    from ptr_pipeline.conversation import ChatFormat
    from ptr_pipeline.training.tokenize import encode_dataset, step_plan

    encoded = encode_dataset(dataset, ChatFormat.from_pretrained(str(model_path)), settings)
    ids, labels = (
        encoded.examples.column("input_ids").to_pylist(),
        encoded.examples.column("labels").to_pylist(),
    )
    real = supervised = 0
    for plan in step_plan(len(ids), settings, 1):
        for micro in plan[0]:
            for i in micro:
                real += len(ids[i])
                supervised += sum(label != IGNORE_INDEX for label in labels[i])
    return {"tokens": real, "supervised": supervised, "dropped": encoded.dropped_too_long,
            "sha": ids_sha(ids), "lengths": [len(x) for x in ids],
            "supervised_rows": sum(sum(lab != IGNORE_INDEX for lab in x) for x in labels)}  # fmt: skip


def run_ours(dataset, settings, model_path: Path, work: Path, plan: dict) -> dict:
    from ptr_pipeline.training.launch import train_in_subprocess

    run_dir = Path(tempfile.mkdtemp(dir=work, prefix="ours-"))
    lines: list[str] = []
    started = time.perf_counter()
    result = train_in_subprocess(dataset, settings, str(model_path), run_dir, on_line=lines.append)
    wall = time.perf_counter() - started
    shutil.rmtree(run_dir, ignore_errors=True)
    if result.cached:
        raise RuntimeError("ours: reused a cached checkpoint; the run folder was not fresh")
    summary = result.manifest["summary"]
    seconds = summary["train_seconds"]
    return {
        "steps": summary["steps"],
        "loop_s": seconds,
        "wall_s": wall,
        "tokens": plan["tokens"],
        "supervised": plan["supervised"],
        "tok_s": plan["tokens"] / seconds,
        "tok_s_wall": plan["tokens"] / wall,
        "tok_s_manifest": summary["tokens_per_s"],
        "attn": settings.attn_implementation,
        "lines": lines,
    }


# --- TRL (this script as the child: --trl-child JOB.json)


def trl_job(args, config: str, model_path: Path, data_path: Path, mean_len: float) -> dict:
    job = {
        "model": str(model_path),
        "data": str(data_path),
        "steps": args.steps,
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "sft": {},
    }
    if config == "defaults":
        job["batch"] = args.micro_batch
    else:
        settings = ours_settings(args, config)
        # A packed TRL batch is `batch` rows of max_length tokens flattened into one sequence:
        # as many as our micro-batch holds in tokens.
        job["batch"] = max(1, round(args.micro_batch * mean_len / args.max_seq_len))
        job["sft"] = {
            "packing": True,
            "max_length": args.max_seq_len,
            "gradient_checkpointing": settings.gradient_checkpointing,
            "lr_scheduler_type": "constant",
            "model_init_kwargs": {"attn_implementation": settings.attn_implementation},
        }
    return job


def run_trl(job: dict, work: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(dir=work, prefix="trl-"))
    job = {**job, "output_dir": str(run_dir / "out"), "result": str(run_dir / "result.json")}
    (run_dir / "job.json").write_text(json.dumps(job))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--trl-child", str(run_dir / "job.json")],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"TRL run failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}")
    result = json.loads((run_dir / "result.json").read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    result["wall_s"] = wall
    result["tok_s"] = result["tokens"] / result["loop_s"]
    result["tok_s_wall"] = result["tokens"] / wall
    result["lines"] = (proc.stdout + proc.stderr).splitlines()
    return result


def trl_child(job_path: Path) -> None:
    """Train with TRL's SFTTrainer as the job says; write tokens and the loop's seconds."""
    job = json.loads(job_path.read_text())
    import torch

    torch.set_num_threads(job["threads"])
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Counting(SFTTrainer):
        """Counts the tokens of every training batch itself: non-padding (attention mask) or,
        padding-free, the flattened length; and the supervised label positions."""

        bench_tokens = 0
        bench_supervised = 0

        def compute_loss(self, model, inputs, *a, **kw):
            if model.training:
                mask = inputs.get("attention_mask")
                self.bench_tokens += int(
                    mask.sum() if mask is not None else inputs["input_ids"].numel()
                )
                self.bench_supervised += int((inputs["labels"] != IGNORE_INDEX).sum())
            return super().compute_loss(model, inputs, *a, **kw)

    class Clock(TrainerCallback):
        begin = end = None

        def on_train_begin(self, args, state, control, **kw):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == args.max_steps:
                self.end = time.perf_counter()

    rows = [json.loads(line) for line in Path(job["data"]).read_text().splitlines()]
    sft = dict(job["sft"])
    config = SFTConfig(
        output_dir=job["output_dir"],
        max_steps=job["steps"],
        per_device_train_batch_size=job["batch"],
        learning_rate=job["lr"],
        seed=job["seed"],
        bf16=False,  # fp32, as ours (TRL's default is bf16)
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **sft,
    )
    clock = Clock()
    trainer = Counting(
        model=job["model"],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(job["model"]),
        callbacks=[clock],
    )
    prepared = trainer.train_dataset
    info = {
        "rows_prepared": len(prepared),
        "attn": trainer.model.config._attn_implementation,
        "padding_free": trainer.padding_free,
        "gradient_checkpointing": config.gradient_checkpointing,
        "optim": getattr(config.optim, "value", config.optim),
        "lr_scheduler": getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type),
        "packing": config.packing,
        "batch": job["batch"],
        "threads": torch.get_num_threads(),
    }
    if not config.packing:
        ids = prepared["input_ids"]
        info["sha"] = ids_sha(ids)
        info["supervised_rows"] = sum(
            sum(x != IGNORE_INDEX for x in lab) for lab in prepared["labels"]
        )
    trainer.train()
    info.update(
        steps=trainer.state.global_step,
        loop_s=clock.end - clock.begin,
        tokens=trainer.bench_tokens,
        supervised=trainer.bench_supervised,
        trl_tokens=trainer._total_train_tokens,
    )
    Path(job["result"]).write_text(json.dumps(info))


def ids_sha(ids: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps([list(map(int, x)) for x in ids]).encode()).hexdigest()[:16]


def trl_rows(dataset) -> list[dict]:
    """The same conversations as conversational prompt-completion rows: the prompt holds the
    query, the thoughts and the refine prompts; the completion is the answer turn."""
    from ptr_pipeline.conversation import progression

    out = []
    for r in dataset.select(["query", "thoughts", "answer"]).to_pylist():
        conversation = progression(r["query"], [*r["thoughts"], r["answer"]], r["refine_turn"])
        out.append({"prompt": conversation[:-1], "completion": conversation[-1:]})
    return out


# --- the benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="A/B pairs per configuration")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    parser.add_argument("--rows", type=int, default=128, help="synthetic PTR rows")
    parser.add_argument("--micro-batch", type=int, default=8, help="rows per optimizer step")
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=19260817, help="both trainers' seed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    parser.add_argument("--work", type=Path, default=None, help="cache folder (default: temp)")
    parser.add_argument("--configs", nargs="+", default=["defaults", "matched"],
                        choices=["defaults", "matched"])  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=300.0,
        help="seconds to wait at most for an idle machine before each run",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="runs again when other processes took over 5%% of the CPU",
    )
    parser.add_argument("--trl-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_child:
        trl_child(args.trl_child)
        return
    dims = QUICK if args.quick else FULL
    lo, hi = (60, 480)
    if args.quick:
        args.repeats, args.steps, args.rows, args.micro_batch = 1, 2, 16, 4
        args.retries, args.idle_wait = 0, min(args.idle_wait, 10.0)  # a smoke run: no figures
    # Both children inherit these: the same torch threads, no hub look-ups.
    os.environ.update(
        OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
    )  # fmt: skip
    work = args.work or Path(tempfile.mkdtemp(prefix="train-throughput-"))
    work.mkdir(parents=True, exist_ok=True)

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model_path = build_model(work, dims, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dataset = make_rows(work, tokenizer, args.rows, args.seed, lo, hi)
    base = ours_settings(args, "defaults")
    plan = ours_plan_tokens(dataset, base, model_path)
    lengths = sorted(plan["lengths"])
    mean_len = statistics.mean(lengths)
    if plan["dropped"]:
        sys.exit(f"{plan['dropped']} rows are longer than --max-seq-len {args.max_seq_len}")
    data_path = work / f"trl-rows-{args.rows}-{args.seed}.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in trl_rows(dataset)))

    print(f"model: {model_path} (Llama, hidden {dims['hidden']}, {dims['layers']} layers, "
          f"{dims['heads']} heads, intermediate {dims['intermediate']}, vocab {len(tokenizer)}): "
          f"{parameter_count(model_path):,} parameters")  # fmt: skip
    print(f"rows: {len(lengths)} PTR rows (1-3 thoughts), tokens as rendered: min {lengths[0]}, "
          f"median {statistics.median(lengths):.0f}, mean {mean_len:.0f}, max {lengths[-1]}; "
          f"{plan['supervised_rows']} answer tokens supervised in all")  # fmt: skip
    print(f"run: {args.steps} optimizer steps, micro-batch {args.micro_batch} rows, lr {args.lr}, "
          f"seed {args.seed}, fp32, {args.threads} torch threads, {args.repeats} A/B pairs a "
          f"configuration; work folder {work}", flush=True)  # fmt: skip

    results: dict[str, dict[str, list[dict]]] = {}
    for config in args.configs:
        settings = ours_settings(args, config)
        job = trl_job(args, config, model_path, data_path, mean_len)
        results[config] = {"ours": [], "trl": []}
        for repeat in range(args.repeats):
            ours = contended_again(args, run_ours, dataset, settings, model_path, work, plan)
            trl = contended_again(args, run_trl, job, work)
            results[config]["ours"].append(ours)
            results[config]["trl"].append(trl)
            for side, run in (("ours", ours), ("trl", trl)):  # each child's output, for reading
                log = work / "logs" / f"{config}-{side}-{repeat + 1}.log"
                log.parent.mkdir(exist_ok=True)
                log.write_text("\n".join(run["lines"]) + "\n")
            print(f"  {config} {repeat + 1}/{args.repeats}: ours {ours['tok_s']:.0f} tok/s "
                  f"({ours['loop_s']:.1f} s loop), trl {trl['tok_s']:.0f} tok/s "
                  f"({trl['loop_s']:.1f} s loop)", file=sys.stderr, flush=True)  # fmt: skip
    (work / "results.json").write_text(json.dumps(results))
    report(args, results, plan)


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores; /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, *_ = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    )
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit_s: float, cores_busy: float = 0.15) -> float:
    """Wait (at most ``limit_s``) until other processes use under ``cores_busy`` cores over 3 s;
    this process sleeps meanwhile. Returns the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        busy = busy_seconds()
        time.sleep(3)
        if (busy_seconds() - busy) / 3 < cores_busy:
            break
    return time.perf_counter() - started


def measured(run, *args) -> dict:
    """``run(*args)``'s result with the CPU seconds of the child processes it waited for, and of
    every other process on the machine meanwhile (``others_s``: what shared the cores)."""
    usage = lambda who: sum(resource.getrusage(who)[:2])  # noqa: E731 (user + system)
    busy, mine, children = (
        busy_seconds(),
        usage(resource.RUSAGE_SELF),
        usage(resource.RUSAGE_CHILDREN),
    )
    started = time.perf_counter()
    result = run(*args)
    seconds = time.perf_counter() - started
    child = usage(resource.RUSAGE_CHILDREN) - children
    others = busy_seconds() - busy - child - (usage(resource.RUSAGE_SELF) - mine)
    return {**result, "cpu_s": child, "others_s": max(0.0, others), "span_s": seconds}


def contended_again(args, run, *run_args) -> dict:
    """``measured(run)`` on an idle machine: waits for one (``--idle-wait``), and runs again
    (``--retries``) when other processes took over 5% of the CPU during the run. Two OpenMP
    threads on two busy cores wait on each other at every parallel region, so contention costs
    far more than its share."""
    cores = os.cpu_count() or 1
    for attempt in range(args.retries + 1):
        wait_idle(args.idle_wait)
        result = measured(run, *run_args)
        share = result["others_s"] / (result["span_s"] * cores)
        if share <= 0.05:
            break
        if attempt < args.retries:
            print(f"  other processes took {share:.0%} of the CPU during the run: again",
                  file=sys.stderr, flush=True)  # fmt: skip
    return result


def report(args, results: dict, plan: dict) -> None:
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    labels = {
        "defaults": "(1) defaults: TRL SFTConfig defaults vs ours",
        "matched": "(2) matched: packing on both, same attention & GC",
    }
    print()
    print("tokens/s over the training steps only (real tokens / loop seconds; start-up excluded)")
    print(f"| {'config':<50} | ours tok/s | trl tok/s | ratio ours/trl |")
    print(f"| {'-' * 50} | ---------: | --------: | -------------: |")
    for config, sides in results.items():
        ours, trl = med(sides["ours"], "tok_s"), med(sides["trl"], "tok_s")
        print(f"| {labels[config]:<50} | {ours:10.0f} | {trl:9.0f} | {ours / trl:14.2f} |")
    if "matched" in results:
        sides = results["matched"]
        ratio = med(sides["ours"], "tok_s") / med(sides["trl"], "tok_s")
        print(f"goal: ratio >= 1.3 against matched TRL: {ratio:.2f} "
              f"({'met' if ratio >= 1.3 else 'not met'})")  # fmt: skip

    print()
    cores = os.cpu_count()
    print("details (medians; per-run tok/s in brackets; child CPU: its CPU seconds / its wall "
          f"seconds; others: CPU seconds of every other process meanwhile / ({cores} cores x the "
          "run's seconds), 0 on an idle machine)")  # fmt: skip
    print("| config | side | steps | tokens/step | supervised/step | loop s | tok/s | "
          "end-to-end s | end-to-end tok/s | manifest tok/s | child CPU | others |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for config, sides in results.items():
        for side, runs in sides.items():
            steps = runs[0]["steps"]
            per_run = ", ".join(f"{r['tok_s']:.0f}" for r in runs)
            manifest = f"{med(runs, 'tok_s_manifest'):.0f}" if side == "ours" else "-"
            child = statistics.median(r["cpu_s"] / r["span_s"] for r in runs)
            others = max(r["others_s"] / (r["span_s"] * cores) for r in runs)
            print(f"| {config} | {side} | {steps} | {med(runs, 'tokens') / steps:.0f} | "
                  f"{med(runs, 'supervised') / steps:.0f} | {med(runs, 'loop_s'):.1f} | "
                  f"{med(runs, 'tok_s'):.0f} [{per_run}] | {med(runs, 'wall_s'):.1f} | "
                  f"{med(runs, 'tok_s_wall'):.0f} | {manifest} | {child:.2f} | "
                  f"{others:.0%} |")  # fmt: skip
    busiest = max(r["others_s"] / (r["span_s"] * cores)
                  for sides in results.values() for runs in sides.values() for r in runs)  # fmt: skip
    if busiest > 0.05:
        print(f"warning: other processes took up to {busiest:.0%} of the machine's CPU during a "
              "run: the figures are noisy; rerun on an idle machine")  # fmt: skip

    print()
    print("notes:")
    for config, sides in results.items():
        t, o = sides["trl"][0], sides["ours"][0]
        print(f"- {config}: ours attn {o['attn']}; TRL attn {t['attn']}, batch {t['batch']} "
              f"{'packed rows' if t['packing'] else 'rows'}, padding_free {t['padding_free']}, "
              f"gradient_checkpointing {t['gradient_checkpointing']}, optim {t['optim']}, "
              f"lr scheduler {t['lr_scheduler']}, {t['rows_prepared']} rows after preparation, "
              f"torch threads {t['threads']}; its own token count "
              f"{t['trl_tokens']} (ours counted {t['tokens']})")  # fmt: skip
        if "sha" in t:
            same = "identical" if t["sha"] == plan["sha"] else "DIFFERENT"
            print(f"  TRL's tokenized rows vs ours: input_ids {same}; supervised tokens "
                  f"{t['supervised_rows']} vs ours {plan['supervised_rows']} (TRL's completion "
                  "also supervises the newline after the answer's <|im_end|>)")  # fmt: skip
        warnings = sorted({line.strip()[:200] for line in t["lines"] if "warn" in line.lower()})
        for w in warnings:
            print(f"  TRL warning: {w}")
    print("- objective: answer-only cross-entropy on both sides (thoughts are context); TRL's data "
          "is a conversational prompt-completion dataset (the prompt: query, thoughts, refine "
          "prompts), so completion_only_loss masks the thoughts exactly. assistant_only_loss "
          "would supervise every assistant turn, thoughts included.")  # fmt: skip
    print("- tokens/s: real tokens of the rows trained / seconds of the training loop. Ours: the "
          "step plan's rows (recomputed here from the same seed) / the manifest's train_seconds "
          "(the manifest's own tokens_per_s in the last column). TRL: tokens counted in "
          "compute_loss (attention-mask sum, or the flattened length when padding-free) / "
          "on_train_begin .. end of the last step. End-to-end: the whole child process, "
          "start-up, tokenization and (ours) the final save included.")  # fmt: skip
    print("- TRL packing (bfd) forces padding_free: a batch of packed rows is flattened into one "
          "sequence with position_ids restarting per sample and no attention mask; with sdpa "
          "(no flash-attention on CPU) transformers rebuilds a dense block-diagonal mask over "
          "the whole flattened batch (masking_utils.find_packed_sequence_indices), so attention "
          "costs grow with (batch x max_length)^2, not per sample.")  # fmt: skip
    print("- TRL computes its loss with a fused LM head: the vocabulary projection only at "
          "supervised positions, in tiles, plus entropy and top-1 accuracy metrics.")  # fmt: skip


if __name__ == "__main__":
    main()
