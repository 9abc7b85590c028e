"""Packing and supervised-only logits: exact, for every attention implementation allowed with
packing, and the step's objective unchanged."""

import importlib.util
import random
import typing

import pyarrow as pa
import pytest
import torch

from ptr_pipeline import schemas
from ptr_pipeline.conversation import GENERIC_REFINE_TURN, Encoded
from ptr_pipeline.training.loss import (
    answer_ce,
    next_token_logprobs,
    supervised_positions,
    supervised_weight,
)
from ptr_pipeline.training.settings import PACKING_EXACT, TrainSettings
from ptr_pipeline.training.tokenize import collate, encode_dataset, pack


def test_best_fit_decreasing_packs_each_row_once_within_capacity():
    assert pack([5, 3, 8, 2, 4], 10) == [[2, 3], [0, 4], [1]]  # 8+2, 5+4, 3
    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(1, 64) for _ in range(rng.randint(1, 40))]
        bins = pack(lengths, 64)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= 64 for b in bins)
        # Best fit never opens a bin that an earlier one could have held: any two bins together
        # overflow, or one of them was the only bin when the other opened.
        loads = sorted(sum(lengths[i] for i in b) for b in bins)
        assert len(bins) == 1 or loads[0] + loads[1] > 64
    with pytest.raises(ValueError, match="65 tokens cannot fit a 64-token row"):
        pack([65], 64)


def _rows(n: int) -> pa.Table:
    """Rows of very different lengths: 0-3 thoughts, short and long answers."""
    rng = random.Random(1)
    rows = []
    for i in range(n):
        thoughts = [f"step {t}: " + "add the numbers " * rng.randint(1, 6) for t in range(i % 4)]
        rows.append(
            {
                "query_id": str(i),
                "query": f"What is {i} plus {i + 1}?" + " Think." * rng.randint(0, 5),
                "thoughts": thoughts,
                "answer": f"The answer is {2 * i + 1}." * rng.randint(1, 4),
                "origin": "ptr",
                "refine_turn": GENERIC_REFINE_TURN,
            }
        )
    return pa.Table.from_pylist(rows, schema=schemas.PTR_DATASET)


def _examples(chat_format, **settings) -> list[Encoded]:
    table = encode_dataset(_rows(7), chat_format, TrainSettings(**settings)).examples
    return [Encoded(**r) for r in table.to_pylist()]


def _losses_and_grads(model, batch, keep_only_supervised: bool):
    """Per-sample per-token next-token log-probabilities (by sample id and position within the
    sample) and the gradient of the step loss, for one micro-batch."""
    model.zero_grad()
    if keep_only_supervised:
        keep = supervised_positions(batch.labels, batch.turns)
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            position_ids=batch.position_ids, use_cache=False, logits_to_keep=keep,
        ).logits  # fmt: skip
    else:
        keep = torch.arange(batch.input_ids.shape[1] - 1)
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            position_ids=batch.position_ids, use_cache=False,
        ).logits[:, keep]  # fmt: skip
    nxt = keep + 1
    logprobs = next_token_logprobs(logits, batch.input_ids[:, nxt])
    weights = batch.loss_weights[:, nxt]
    answer_ce(logprobs, weights, supervised_weight(batch.labels, batch.loss_weights)).backward()
    per_token = {}
    for row in range(batch.input_ids.shape[0]):
        for j, p in enumerate(nxt.tolist()):
            sample = int(batch.sample_ids[row, p])
            if sample and batch.turns[row, p] > 0:  # every turn token: supervised or not
                per_token[sample, int(batch.position_ids[row, p])] = logprobs[row, j].item()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return per_token, grads


@pytest.mark.parametrize("attn", PACKING_EXACT)
def test_packing_is_exact(models_home, chat_format, attn):
    """Packed rows (positions restarting, no mask) against one padded row per sample: the same
    per-token log-probabilities and the same gradients, for every implementation allowed."""
    from transformers import AutoModelForCausalLM

    assert set(PACKING_EXACT) < set(typing.get_args(TrainSettings.model_fields[
        "attn_implementation"].annotation))  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(
        models_home.resolve_model("tiny:base"), attn_implementation=attn
    )
    examples = _examples(chat_format, thought_weight=0.5)
    lengths = [len(e.input_ids) for e in examples]
    capacity = max(lengths) + min(lengths)  # at least one row holds two samples
    packed = collate(examples, 0, pack_into=capacity)
    padded = collate(examples, 0)
    assert packed.attention_mask is None and packed.input_ids.shape[0] < len(examples)
    assert packed.input_ids.numel() < padded.input_ids.numel()
    a, grads_a = _losses_and_grads(model, padded, keep_only_supervised=False)
    b, grads_b = _losses_and_grads(model, packed, keep_only_supervised=True)
    assert a.keys() == b.keys() and len(a) == sum(sum(t > 0 for t in e.turns) for e in examples)
    for key, value in a.items():
        assert b[key] == pytest.approx(value, abs=1e-5), key
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-6)
    assert max(g.abs().max() for g in grads_a.values()) > 1e-3  # the gradients are not all zero


def test_cross_sample_attention_would_show(models_home, chat_format):
    """The comparison above can fail: with an all-ones attention mask the packed samples see
    each other, and the second sample's log-probabilities move."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models_home.resolve_model("tiny:base"))
    examples = _examples(chat_format)[:2]
    packed = collate(examples, 0, pack_into=10_000)
    leaky = type(packed)(**{**vars(packed), "attention_mask": torch.ones_like(packed.input_ids)})
    exact, _ = _losses_and_grads(model, packed, True)
    wrong, _ = _losses_and_grads(model, leaky, True)
    assert max(abs(exact[k] - wrong[k]) for k in exact) > 1e-2


def test_supervised_positions_are_those_whose_next_token_has_a_label(chat_format):
    examples = _examples(chat_format)
    batch = collate(examples, 0, pack_into=1024)
    keep = supervised_positions(batch.labels)
    expected = [
        p for p in range(batch.labels.shape[1] - 1) if (batch.labels[:, p + 1] != -100).any()
    ]
    assert keep.tolist() == expected and 0 < len(expected) < batch.labels.shape[1] - 1
    # With turns, the thoughts' positions too (the confidence term needs their logits).
    with_turns = supervised_positions(batch.labels, batch.turns)
    assert set(keep.tolist()) < set(with_turns.tolist())
    nothing = torch.full((1, 5), -100)
    assert supervised_positions(nothing).tolist() == [0]  # a weightless batch still runs


def test_packing_keeps_the_weights_and_the_step_normaliser(chat_format):
    examples = _examples(chat_format, thought_weight=0.3, thought_weight_schedule="linear")
    packed, padded = collate(examples, 0, pack_into=512), collate(examples, 0)
    assert supervised_weight(packed.labels, packed.loss_weights).item() == pytest.approx(
        supervised_weight(padded.labels, padded.loss_weights).item()
    )
    for batch in (packed, padded):
        for i, e in enumerate(examples, start=1):
            mine = batch.sample_ids == i
            assert batch.loss_weights[mine].tolist() == pytest.approx(e.loss_weights)
            assert batch.turns[mine].tolist() == e.turns
            assert batch.position_ids[mine].tolist() == list(range(len(e.input_ids)))
    pads = packed.sample_ids == 0
    assert (packed.labels[pads] == -100).all() and (packed.loss_weights[pads] == 0).all()


def test_packing_needs_an_implementation_tested_exact():
    with pytest.raises(ValueError, match="packing with attn_implementation='flash_attention_2'"):
        TrainSettings(attn_implementation="flash_attention_2")
    if importlib.util.find_spec("flash_attn") is None:  # refused before any compute, too
        with pytest.raises(ValueError, match="needs the flash-attn package"):
            TrainSettings(attn_implementation="flash_attention_2", packing=False)
    else:
        assert (
            TrainSettings(attn_implementation="flash_attention_2", packing=False).packing is False
        )
