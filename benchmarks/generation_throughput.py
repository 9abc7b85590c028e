"""Throughput of the transformers generation backend against raw ``model.generate``, same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/generation_throughput.py [--model PATH]

Both decode the same prompt ids greedily in the same batches with the same stop ids, so they do
identical work; the two are
timed alternately ``--repeats`` times and the medians compared. Prints tokens per second for both
and the ratio backend/raw (the roadmap's goal: at least 0.95). Default model: the embedded tiny
strong model, built in a temp folder.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ptr_pipeline.engines import Sampling, TransformersGenerator
from ptr_pipeline.evaluation import load_examples
from ptr_pipeline.models import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = args.model or resolve_model("tiny:strong", Path(tempfile.mkdtemp()))
    questions = [e.prompt for e in load_examples("gsm8k")] * 4
    conversations = [[{"role": "user", "content": q}] for q in questions[: args.prompts]]
    backend = TransformersGenerator(model, batch_size=args.batch_size)
    sampling = Sampling(temperature=0.0, max_new_tokens=args.max_new_tokens)
    tok, lm, fmt = backend.tokenizer, backend.lm, backend.chat_format

    def raw() -> int:
        """The baseline: the same ids through model.generate, no decoding or bookkeeping."""
        tokens = 0
        for start in range(0, len(conversations), args.batch_size):
            ids = [fmt.prompt_ids(c) for c in conversations[start : start + args.batch_size]]
            enc = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")
            with torch.inference_mode():
                out = lm.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=args.max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=list(fmt.stop_token_ids),
                )
            tokens += out[:, enc["input_ids"].shape[1] :].numel()
        return tokens

    tokens = raw()  # warm-up; greedy with these settings: the same count every time
    backend.generate(conversations, sampling)
    raw_s, backend_s = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        raw()
        raw_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        backend.generate(conversations, sampling)
        backend_s.append(time.perf_counter() - started)
    raw_med, backend_med = statistics.median(raw_s), statistics.median(backend_s)
    print(
        f"model: {model}; {len(conversations)} prompts, batch {args.batch_size}, <= {tokens} new tokens"
    )
    print(
        f"raw model.generate:    {tokens / raw_med:9.1f} tokens/s (median of {args.repeats}: {raw_med:.3f} s)"
    )
    print(
        f"TransformersGenerator: {tokens / backend_med:9.1f} tokens/s (median of {args.repeats}: {backend_med:.3f} s)"
    )
    print(f"ratio backend/raw: {raw_med / backend_med:.3f}")


if __name__ == "__main__":
    main()
