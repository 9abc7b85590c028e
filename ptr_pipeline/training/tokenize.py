"""PTR rows as token ids, labels and per-token loss weights; the step plan; batching.

A row (query, thoughts t_1..t_n, answer) becomes the multi-round conversation that test-time
refinement uses (``conversation.progression``) and is encoded by the model's ``ChatFormat``, the
object generation uses too: the query and the refine prompts are context, each thought is an
assistant turn with weight ``thought_weight`` (0 = masked, TRL's ``assistant_only_loss`` on the
answer alone), and the answer is the last assistant turn with weight ``answer_weight``. A turn is
supervised through the token that ends it, one that generation stops at.

The step plan uses every row of every epoch: each optimizer step takes the next
``micro_batch_size x gradient_accumulation_steps x world_size`` rows of the epoch's shuffled order;
the last step of an epoch takes what is left, and a rank with no row left for a micro-step runs a
zero-weight micro-batch so that every rank takes part in every collective.
"""

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import torch

from ptr_pipeline import schemas
from ptr_pipeline.conversation import ChatFormat, ChatFormatError, Encoded, progression
from ptr_pipeline.schemas import IGNORE_INDEX
from ptr_pipeline.training.settings import TrainSettings


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [b, s]
    attention_mask: torch.Tensor  # [b, s]
    labels: torch.Tensor  # [b, s], IGNORE_INDEX where unsupervised
    loss_weights: torch.Tensor  # [b, s] float32, 0 where unsupervised


def segment_weights(num_thoughts: int, s: TrainSettings) -> list[float]:
    """Loss weight of each assistant turn: thoughts 1..n (beta_t = thought_weight * t / n with the
    linear schedule, docs/paper_notes.md section 3.1), then the answer."""
    if s.thought_weight_schedule == "linear":
        thoughts = [s.thought_weight * t / num_thoughts for t in range(1, num_thoughts + 1)]
    else:
        thoughts = [s.thought_weight] * num_thoughts
    return [*thoughts, s.answer_weight]


def encode_example(
    chat_format: ChatFormat, query: str, thoughts: list[str], answer: str, s: TrainSettings
) -> Encoded | None:
    """Token ids, labels and loss weights of one row; None when longer than ``s.max_seq_len``.

    Raises:
        ChatFormatError: the tokenizer or chat template cannot give training the ids inference
            sees (see ``conversation.ChatFormat.encode``).
    """
    conversation = progression(query, [*thoughts, answer], s.refine_prompt)
    encoded = chat_format.encode(conversation, segment_weights(len(thoughts), s))
    return None if len(encoded.input_ids) > s.max_seq_len else encoded


@dataclass(frozen=True)
class EncodedDataset:
    examples: pa.Table  # schemas.TRAIN_EXAMPLES
    dropped_too_long: int  # rows longer than max_seq_len
    cut_turns: int  # supervised turns cut at a stop token written inside their text


def encode_dataset(dataset: pa.Table, chat_format: ChatFormat, s: TrainSettings) -> EncodedDataset:
    """Every row of a ``schemas.PTR_DATASET`` table encoded; rows over ``max_seq_len`` dropped.

    Raises:
        ChatFormatError: the tokenizer or chat template cannot give training the ids inference
            sees; the message names the row.
    """
    schemas.validate(dataset, schemas.PTR_DATASET, "ptr_dataset")
    rows, dropped, cut = [], 0, 0
    for r in dataset.select(["query_id", "query", "thoughts", "answer"]).to_pylist():
        try:
            encoded = encode_example(chat_format, r["query"], r["thoughts"], r["answer"], s)
        except ChatFormatError as e:
            raise ChatFormatError(f"ptr_dataset row {r['query_id']}: {e}") from e
        if encoded is None:
            dropped += 1
            continue
        cut += encoded.cut_turns
        rows.append(
            {
                "input_ids": encoded.input_ids,
                "labels": encoded.labels,
                "loss_weights": encoded.loss_weights,
            }
        )
    return EncodedDataset(pa.Table.from_pylist(rows, schema=schemas.TRAIN_EXAMPLES), dropped, cut)


def steps_per_epoch(num_examples: int, s: TrainSettings, world_size: int) -> int:
    per_step = s.micro_batch_size * s.gradient_accumulation_steps * world_size
    return math.ceil(num_examples / per_step)


def total_steps(num_examples: int, s: TrainSettings, world_size: int) -> int:
    total = steps_per_epoch(num_examples, s, world_size) * s.num_epochs
    return min(total, s.max_steps) if s.max_steps else total


def step_plan(
    num_examples: int, s: TrainSettings, world_size: int
) -> Iterator[list[list[list[int]]]]:
    """The example indices of every optimizer step: ``plan[rank][micro_step]`` -> indices.

    Every rank gets ``gradient_accumulation_steps`` micro-steps per step, each of at most
    ``micro_batch_size`` indices (possibly none at the end of an epoch). The same seed gives every
    rank the same plan, so each rank takes its own slice.
    """
    rng = random.Random(s.seed)
    micro, accumulation = s.micro_batch_size, s.gradient_accumulation_steps
    per_micro_step = micro * world_size
    done, limit = 0, total_steps(num_examples, s, world_size)
    while num_examples:
        order = list(range(num_examples))
        rng.shuffle(order)
        for start in range(0, num_examples, per_micro_step * accumulation):
            if done == limit:
                return
            rows = order[start : start + per_micro_step * accumulation]
            plan = [[[] for _ in range(accumulation)] for _ in range(world_size)]
            for m in range(accumulation):
                chunk = rows[m * per_micro_step : (m + 1) * per_micro_step]
                for rank in range(world_size):
                    plan[rank][m] = chunk[rank::world_size]
            done += 1
            yield plan


def collate(examples: list[Encoded], pad_id: int) -> Batch:
    """Right-pad examples into tensors; padding is unsupervised and weightless."""
    width = max(len(e.input_ids) for e in examples)
    pad = lambda xs, v: xs + [v] * (width - len(xs))  # noqa: E731
    return Batch(
        input_ids=torch.tensor([pad(e.input_ids, pad_id) for e in examples]),
        attention_mask=torch.tensor([pad([1] * len(e.input_ids), 0) for e in examples]),
        labels=torch.tensor([pad(e.labels, IGNORE_INDEX) for e in examples]),
        loss_weights=torch.tensor(
            [pad(e.loss_weights, 0.0) for e in examples], dtype=torch.float32
        ),
    )
