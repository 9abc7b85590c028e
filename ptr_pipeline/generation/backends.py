"""Generation backends: one small protocol, a transformers engine and a vLLM engine.

``TransformersGenerator`` runs anywhere (the CPU default, and GPUs without vLLM).
``VLLMGenerator`` follows vLLM's offline-inference example (``LLM.chat`` with
``SamplingParams(n=...)``); ``vllm`` is imported inside it, so the default install never needs it.
"""

import gc
import logging
from collections.abc import Iterator
from typing import Protocol

from ptr_pipeline.generation.prompts import Conversation, render_plain
from ptr_pipeline.generation.settings import Sampling

log = logging.getLogger(__name__)


class Generator(Protocol):
    model: str

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[list[str]]:
        """``sampling.n`` completions for each conversation, in input order."""
        ...

    def close(self) -> None:
        """Release the model's memory (GPU included) so another model can load in this process."""
        ...


def make_generator(
    backend: str, model: str, device: str = "cpu", batch_size: int = 16, **vllm_kwargs
) -> Generator:
    """The generator for ``backend`` ("transformers" or "vllm") over a resolved model path."""
    if backend == "transformers":
        return TransformersGenerator(model, device=device, batch_size=batch_size)
    if backend == "vllm":
        return VLLMGenerator(model, **vllm_kwargs)
    raise ValueError(f"unknown generation backend {backend!r}; use 'transformers' or 'vllm'")


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def _chunks(items: list, size: int) -> Iterator[tuple[int, list]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


class TransformersGenerator:
    """Batched ``model.generate`` with the tokenizer's chat template (left padding)."""

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval()

    def render(self, conversation: Conversation) -> str:
        if self.tokenizer.chat_template is None:
            return render_plain(conversation)
        return self.tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[list[str]]:
        torch = self._torch
        out: list[list[str]] = []
        for start, batch in _chunks(conversations, self.batch_size):
            # Seed per batch so a resumed shard reproduces what an uninterrupted run would write.
            torch.manual_seed(sampling.seed + start)
            enc = self.tokenizer(
                [self.render(c) for c in batch],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(self.device)
            greedy = sampling.temperature == 0.0
            with torch.inference_mode():
                ids = self.lm.generate(
                    **enc,
                    do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature,
                    top_p=None if greedy else sampling.top_p,
                    top_k=None if greedy or not sampling.top_k else sampling.top_k,
                    max_new_tokens=sampling.max_new_tokens,
                    num_return_sequences=sampling.n,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
            texts = self.tokenizer.batch_decode(
                ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
            texts = [_cut_at_stop(t, sampling.stop).strip() for t in texts]
            out.extend(texts[i : i + sampling.n] for i in range(0, len(texts), sampling.n))
        return out

    def close(self) -> None:
        del self.lm
        gc.collect()
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


class VLLMGenerator:
    """vLLM offline engine (GPU). Needs ``pip install 'ptr-pipeline[vllm]'``.

    Not exercised by ``make test`` (vLLM is CUDA-only and absent from the default install); the
    tests marked ``vllm`` run it where the package is installed.
    """

    def __init__(
        self, model: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85
    ):
        import vllm

        self.model = model
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=True,  # later rounds share the earlier rounds' prefix
        )

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[list[str]]:
        params = self._vllm.SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k or -1,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
        )
        results = self.llm.chat(conversations, params, use_tqdm=False)
        return [[o.text.strip() for o in r.outputs] for r in results]

    def close(self) -> None:
        # vLLM v1 runs the model in an engine-core process; shutting it down frees its memory.
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()
