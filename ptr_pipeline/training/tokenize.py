"""PTR rows as token ids, labels and per-token loss weights; the step plan; packing; batching.

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

Packing (``packing: true``) changes how a micro-batch's rows are laid out, never which rows a step
trains on: they are packed into rows of at most ``max_seq_len`` tokens by best-fit decreasing,
``position_ids`` restart at 0 for every sample, and ``attention_mask`` is None. With no mask, no
cache and restarting positions, transformers (``masking_utils.find_packed_sequence_indices``)
builds a block-diagonal causal mask for sdpa and eager attention, so no token attends across
samples (``test_packing_is_exact`` compares per-token losses and gradients with unpacked rows).
"""

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import torch

from ptr_pipeline import schemas
from ptr_pipeline.conversation import (
    GENERIC_REFINE_TURN,
    ChatFormat,
    ChatFormatError,
    Encoded,
    progression,
)
from ptr_pipeline.schemas import IGNORE_INDEX
from ptr_pipeline.training.settings import TrainSettings


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [b, s]
    position_ids: torch.Tensor  # [b, s], restarting at 0 for every sample (and padding run)
    attention_mask: torch.Tensor | None  # [b, s]; None when packed (the positions separate samples)
    labels: torch.Tensor  # [b, s], IGNORE_INDEX where unsupervised
    loss_weights: torch.Tensor  # [b, s] float32, 0 where unsupervised
    sample_ids: torch.Tensor  # [b, s] int64: 1..m the micro-batch's samples, 0 padding
    turns: torch.Tensor  # [b, s] int64: 1..n a sample's assistant turn (n = answer), 0 context


def segment_weights(num_thoughts: int, s: TrainSettings) -> list[float]:
    """Loss weight of each assistant turn: thoughts 1..n (beta_t = thought_weight * t / n with the
    linear schedule, docs/paper_notes.md section 3.1), then the answer."""
    if s.thought_weight_schedule == "linear":
        thoughts = [s.thought_weight * t / num_thoughts for t in range(1, num_thoughts + 1)]
    else:
        thoughts = [s.thought_weight] * num_thoughts
    return [*thoughts, s.answer_weight]


def encode_example(
    chat_format: ChatFormat,
    query: str,
    thoughts: list[str],
    answer: str,
    s: TrainSettings,
    refine_turn: str = GENERIC_REFINE_TURN,
) -> Encoded | None:
    """Token ids, labels and loss weights of one row; None when longer than ``s.max_seq_len``.
    ``refine_turn`` (the row's, ``{query}`` unfilled) is the user turn between steps.

    Raises:
        ChatFormatError: the tokenizer or chat template cannot give training the ids inference
            sees (see ``conversation.ChatFormat.encode``).
    """
    conversation = progression(query, [*thoughts, answer], refine_turn)
    encoded = chat_format.encode(conversation, segment_weights(len(thoughts), s))
    return None if len(encoded.input_ids) > s.max_seq_len else encoded


@dataclass(frozen=True)
class EncodedDataset:
    examples: pa.Table  # schemas.TRAIN_EXAMPLES
    dropped_too_long: int  # rows longer than max_seq_len
    cut_turns: int  # supervised turns cut at a stop token written inside their text


def dataset_refine_turn(dataset: pa.Table) -> str:
    """The refine turn of a ``schemas.PTR_DATASET`` table: the one its rows record (the strong
    stage's ``refine_turn``), which the checkpoint's manifest then carries to evaluation.

    Raises:
        ValueError: the rows record more than one turn (a model would be trained on two
            conversation formats and could be tested with only one).
    """
    turns = set(pc.unique(dataset.column("refine_turn")).to_pylist()) - {""}
    if len(turns) > 1:
        raise ValueError(
            f"ptr_dataset: its rows record {len(turns)} refine turns ({sorted(turns)}); a "
            "checkpoint is trained and evaluated with one"
        )
    return turns.pop() if turns else GENERIC_REFINE_TURN


def encode_dataset(dataset: pa.Table, chat_format: ChatFormat, s: TrainSettings) -> EncodedDataset:
    """Every row of a ``schemas.PTR_DATASET`` table encoded (with the row's ``refine_turn``
    between steps); rows over ``max_seq_len`` dropped.

    Raises:
        ChatFormatError: the tokenizer or chat template cannot give training the ids inference
            sees; the message names the row.
    """
    schemas.validate(dataset, schemas.PTR_DATASET, "ptr_dataset")
    rows, dropped, cut = [], 0, 0
    columns = ["query_id", "query", "thoughts", "answer", "refine_turn"]
    for r in dataset.select(columns).to_pylist():
        try:
            encoded = encode_example(
                chat_format, r["query"], r["thoughts"], r["answer"], s, r["refine_turn"]
            )
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
                "turns": encoded.turns,
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


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices into ``lengths`` grouped into bins of at most ``capacity``
    tokens, longest first, each into the fullest bin it fits (a new bin when none does).

    Raises:
        ValueError: a length over ``capacity``.
    """
    bins: list[list[int]] = []
    free: list[int] = []  # free[j]: tokens left in bins[j]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if lengths[i] > capacity:
            raise ValueError(f"a sample of {lengths[i]} tokens cannot fit a {capacity}-token row")
        fits = [j for j in range(len(bins)) if free[j] >= lengths[i]]
        if fits:
            j = min(fits, key=lambda j: (free[j], j))
            bins[j].append(i)
            free[j] -= lengths[i]
        else:
            bins.append([i])
            free.append(capacity - lengths[i])
    return bins


def collate(examples: list[Encoded], pad_id: int, pack_into: int | None = None) -> Batch:
    """Examples as one micro-batch of tensors: a row each, right-padded (``pack_into=None``), or
    packed by ``pack`` into rows of at most ``pack_into`` tokens. Padding is unsupervised and
    weightless, sample 0 and turn 0; in packed rows it is a run of its own, with positions from 0.
    """
    rows = (
        pack([len(e.input_ids) for e in examples], pack_into)
        if pack_into
        else [[i] for i in range(len(examples))]
    )
    width = max(sum(len(examples[i].input_ids) for i in row) for row in rows)
    columns: dict[str, list[list]] = {
        k: []
        for k in ("input_ids", "position_ids", "labels", "loss_weights", "sample_ids", "turns")
    }
    for row in rows:
        values: dict[str, list] = {k: [] for k in columns}
        for i in row:
            e, n = examples[i], len(examples[i].input_ids)
            values["input_ids"] += e.input_ids
            values["position_ids"] += range(n)
            values["labels"] += e.labels
            values["loss_weights"] += e.loss_weights
            values["sample_ids"] += [i + 1] * n
            values["turns"] += e.turns
        pad = width - len(values["input_ids"])
        fill = {"input_ids": pad_id, "labels": IGNORE_INDEX, "loss_weights": 0.0,
                "sample_ids": 0, "turns": 0}  # fmt: skip
        for k, v in fill.items():
            values[k] += [v] * pad
        values["position_ids"] += range(pad)
        for k in columns:
            columns[k].append(values[k])
    ids = torch.tensor(columns["input_ids"])
    mask = None
    if not pack_into:
        lengths = torch.tensor([len(e.input_ids) for e in examples])
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return Batch(
        input_ids=ids,
        position_ids=torch.tensor(columns["position_ids"]),
        attention_mask=mask,
        labels=torch.tensor(columns["labels"]),
        loss_weights=torch.tensor(columns["loss_weights"], dtype=torch.float32),
        sample_ids=torch.tensor(columns["sample_ids"]),
        turns=torch.tensor(columns["turns"]),
    )
