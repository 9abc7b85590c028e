"""Turn PTR rows into token ids, labels and per-token loss weights; batch them.

A row (query, thoughts t_1..t_n, answer) becomes the multi-round conversation that test-time
refinement uses (generation.prompts.progression_conversation): the query, each thought as an
assistant turn, the refine prompt before every later turn, and the answer as the last assistant
turn. Only assistant content (and its end-of-turn token) can carry weight; everything the model
does not write is IGNORE_INDEX.
"""

from dataclasses import dataclass

import torch

from ptr_pipeline.generation.prompts import progression_conversation, render_plain
from ptr_pipeline.schemas import IGNORE_INDEX
from ptr_pipeline.training.settings import TrainSettings


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    weights: list[float]


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [b, s]
    attention_mask: torch.Tensor  # [b, s]
    labels: torch.Tensor  # [b, s]
    weights: torch.Tensor  # [b, s] float32


def segment_weights(num_thoughts: int, s: TrainSettings) -> list[float]:
    """Loss weight of each assistant turn: thoughts 1..n, then the answer."""
    if s.thought_weight_schedule == "linear":
        thoughts = [s.thought_weight * t / num_thoughts for t in range(1, num_thoughts + 1)]
    else:
        thoughts = [s.thought_weight] * num_thoughts
    return [*thoughts, s.answer_weight]


def _render(tokenizer, conversation, add_generation_prompt: bool) -> str:
    if tokenizer.chat_template is None:
        return render_plain(conversation, add_generation_prompt)
    return tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def encode_example(
    tokenizer, query: str, thoughts: list[str], answer: str, s: TrainSettings
) -> Example | None:
    """Token ids, labels and weights of one row; None when longer than ``s.max_seq_len``.

    Raises:
        ValueError: when the tokenizer's chat template does not render conversations as
            prefixes of one another (then assistant turns cannot be located).
    """
    conversation = progression_conversation(query, [*thoughts, answer], s.refine_prompt)
    weights_by_turn = iter(segment_weights(len(thoughts), s))
    pieces: list[tuple[str, float | None]] = []  # (text, weight or None = not supervised)
    done = ""
    for i, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, conversation[:i], add_generation_prompt=True)
        full = _render(tokenizer, conversation[: i + 1], add_generation_prompt=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise ValueError("chat template is not prefix-stable; cannot locate assistant turns")
        pieces += [(prompt[len(done) :], None), (full[len(prompt) :], next(weights_by_turn))]
        done = full
    ids, labels, weights = [], [], []
    for text, weight in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        supervised = weight is not None and weight > 0
        labels += piece if supervised else [IGNORE_INDEX] * len(piece)
        weights += [weight if supervised else 0.0] * len(piece)
    if len(ids) > s.max_seq_len:
        return None
    return Example(ids, labels, weights)


def collate(examples: list[Example], pad_id: int) -> Batch:
    """Right-pad a list of examples into tensors; padding is unsupervised and weightless."""
    width = max(len(e.input_ids) for e in examples)
    pad = lambda xs, v: xs + [v] * (width - len(xs))  # noqa: E731
    return Batch(
        input_ids=torch.tensor([pad(e.input_ids, pad_id) for e in examples]),
        attention_mask=torch.tensor([pad([1] * len(e.input_ids), 0) for e in examples]),
        labels=torch.tensor([pad(e.labels, IGNORE_INDEX) for e in examples]),
        weights=torch.tensor([pad(e.weights, 0.0) for e in examples], dtype=torch.float32),
    )
