"""The weighted thought-mask loss and the token/label/weight layout it trains on."""

import pytest
import torch
import torch.nn.functional as F

from ptr_pipeline.conversation import GENERIC_REFINE_TURN
from ptr_pipeline.schemas import IGNORE_INDEX
from ptr_pipeline.training.loss import supervised_weight, weighted_thought_loss
from ptr_pipeline.training.settings import TrainSettings
from ptr_pipeline.training.tokenize import (
    collate,
    encode_example,
    segment_weights,
    step_plan,
    total_steps,
)


def test_loss_equals_manual_computation_on_handcrafted_batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, 3], [IGNORE_INDEX, IGNORE_INDEX, 4, IGNORE_INDEX]])
    weights = torch.tensor([[0.0, 0.5, 1.0, 2.0], [0.0, 0.0, 1.0, 0.0]])
    # Position t predicts label t+1: the supervised (prediction, target, weight) triples are
    terms = [((0, 0), 1, 0.5), ((0, 1), 2, 1.0), ((0, 2), 3, 2.0), ((1, 1), 4, 1.0)]
    nll = lambda pos, target: -torch.log_softmax(logits[pos], -1)[target]  # noqa: E731
    expected = sum(w * nll(pos, t) for pos, t, w in terms) / sum(w for *_, w in terms)
    assert weighted_thought_loss(logits, labels, weights).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_unit_weights_equal_plain_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(3, 6, 7)
    labels = torch.randint(0, 7, (3, 6))
    labels[:, :2] = IGNORE_INDEX
    weights = (labels != IGNORE_INDEX).float()
    plain = F.cross_entropy(
        logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert weighted_thought_loss(logits, labels, weights).item() == pytest.approx(
        plain.item(), rel=1e-6
    )


def test_weights_on_ignored_labels_do_not_count():
    torch.manual_seed(2)
    logits = torch.randn(1, 5, 4)
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, 2, 3]])
    a = weighted_thought_loss(logits, labels, torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0]]))
    b = weighted_thought_loss(logits, labels, torch.tensor([[9.0, 1.0, 9.0, 1.0, 1.0]]))
    assert a.item() == pytest.approx(b.item())


def _segments(example, tokenizer):
    """Decoded text of each maximal run of equal non-zero weight, with that weight."""
    runs, current, weight = [], [], None
    for tok, lab, w in zip(example.input_ids, example.labels, example.loss_weights, strict=True):
        assert (lab == IGNORE_INDEX) == (w == 0.0)
        assert lab in (IGNORE_INDEX, tok)  # labels are the inputs themselves (shifted in the loss)
        if w != weight and current:
            runs.append((tokenizer.decode(current), weight))
            current = []
        weight = w
        if w:
            current.append(tok)
    if current:
        runs.append((tokenizer.decode(current), weight))
    return runs


def test_masks_and_weights_cover_exactly_the_assistant_turns(chat_format, tokenizer):
    settings = TrainSettings(
        thought_weight=0.5, thought_weight_schedule="linear", answer_weight=1.0
    )
    ex = encode_example(
        chat_format, "What is 2+2?", ["it is 5", "it is 4"], "The answer is 4.", settings
    )
    # Each turn through <|im_end|>, the token generation stops at; the template's "\n" after it
    # is context.
    assert _segments(ex, tokenizer) == [
        ("it is 5<|im_end|>", 0.25),  # thought 1 of 2: 0.5 * 1/2
        ("it is 4<|im_end|>", 0.5),  # thought 2 of 2: 0.5 * 2/2
        ("The answer is 4.<|im_end|>", 1.0),
    ]
    # Everything else (query, refine prompts, role headers) is context only.
    text = tokenizer.decode(ex.input_ids)
    assert text.count(GENERIC_REFINE_TURN) == 2
    assert text.startswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_thought_weight_zero_masks_thoughts(chat_format, tokenizer):
    ex = encode_example(chat_format, "Q?", ["draft one", "draft two"], "final", TrainSettings())
    assert _segments(ex, tokenizer) == [("final<|im_end|>", 1.0)]


def test_segment_weights_schedule():
    s = TrainSettings(thought_weight=0.3, thought_weight_schedule="linear", answer_weight=0.8)
    assert segment_weights(3, s) == pytest.approx([0.1, 0.2, 0.3, 0.8])
    assert segment_weights(2, TrainSettings(thought_weight=0.3)) == [0.3, 0.3, 1.0]


def test_too_long_examples_are_dropped(chat_format):
    s = TrainSettings(max_seq_len=16)
    assert encode_example(chat_format, "a long question " * 10, [], "answer", s) is None


def test_weights_survive_batching(chat_format, tokenizer):
    s = TrainSettings(thought_weight=0.5)
    a = encode_example(chat_format, "Short?", ["x"], "yes", s)
    b = encode_example(
        chat_format, "A rather longer question here?", ["first try", "second"], "final answer", s
    )
    batch = collate([a, b], tokenizer.pad_token_id)
    for row, ex in enumerate([a, b]):
        n = len(ex.input_ids)
        assert batch.input_ids[row, :n].tolist() == ex.input_ids
        assert batch.labels[row, :n].tolist() == ex.labels
        assert batch.loss_weights[row, :n].tolist() == pytest.approx(ex.loss_weights)
        assert batch.labels[row, n:].eq(IGNORE_INDEX).all()
        assert batch.loss_weights[row, n:].eq(0).all()
        assert batch.attention_mask[row].sum().item() == n
    # The batch loss is the weight-normalised sum over both examples' tokens.
    torch.manual_seed(3)
    logits = torch.randn(*batch.input_ids.shape, len(tokenizer))
    total, weight = 0.0, 0.0
    for row in range(2):
        for t in range(1, batch.input_ids.shape[1]):
            w = batch.loss_weights[row, t].item()
            if w:
                total += w * -torch.log_softmax(logits[row, t - 1], -1)[batch.labels[row, t]].item()
                weight += w
    loss = weighted_thought_loss(logits, batch.labels, batch.loss_weights).item()
    assert loss == pytest.approx(total / weight, rel=1e-5)
    assert supervised_weight(batch.labels, batch.loss_weights).item() == pytest.approx(weight)


def test_a_step_normaliser_makes_micro_batch_losses_add_up(chat_format):
    """Split one batch in two: with the step's total weight as normaliser, the halves' losses sum
    to the whole batch's loss (the objective does not depend on the cut)."""
    s = TrainSettings(thought_weight=0.3)
    rows = [
        encode_example(chat_format, "Q one?", ["draft"], "a long answer " * 6, s),
        encode_example(chat_format, "Q two?", [], "4.", s),
    ]
    torch.manual_seed(4)
    whole = collate(rows, 0)
    logits = torch.randn(*whole.input_ids.shape, len(chat_format.tokenizer))
    step_weight = supervised_weight(whole.labels, whole.loss_weights)
    full = weighted_thought_loss(logits, whole.labels, whole.loss_weights)
    halves = sum(
        weighted_thought_loss(
            logits[i : i + 1, : len(rows[i].input_ids)],
            whole.labels[i : i + 1, : len(rows[i].input_ids)],
            whole.loss_weights[i : i + 1, : len(rows[i].input_ids)],
            step_weight,
        )
        for i in range(2)
    )
    assert halves.item() == pytest.approx(full.item(), rel=1e-6)
    # Normalised per micro-batch instead, the short answer would weigh as much as the long one.
    per_micro = [
        weighted_thought_loss(
            logits[i : i + 1, : len(rows[i].input_ids)],
            whole.labels[i : i + 1, : len(rows[i].input_ids)],
            whole.loss_weights[i : i + 1, : len(rows[i].input_ids)],
        ).item()
        for i in range(2)
    ]
    assert sum(per_micro) / 2 != pytest.approx(full.item(), rel=1e-3)


@pytest.mark.parametrize(
    ("rows", "micro", "accumulation", "world", "epochs"),
    [(27, 4, 1, 1, 2), (10, 2, 2, 2, 1), (5, 4, 2, 2, 3), (1, 1, 1, 1, 2)],
)
def test_step_plan_uses_every_row_once_per_epoch(rows, micro, accumulation, world, epochs):
    s = TrainSettings(
        micro_batch_size=micro, gradient_accumulation_steps=accumulation, num_epochs=epochs
    )
    plan = list(step_plan(rows, s, world))
    assert len(plan) == total_steps(rows, s, world)
    per_step = micro * accumulation * world
    assert len(plan) == epochs * -(-rows // per_step)
    seen = []
    for step in plan:
        assert len(step) == world and all(len(r) == accumulation for r in step)
        assert all(len(m) <= micro for r in step for m in r)
        seen += [i for r in step for m in r for i in m]
    for e in range(epochs):
        epoch = seen[e * rows : (e + 1) * rows]
        assert sorted(epoch) == list(range(rows))  # every row, once, per epoch
    capped = TrainSettings(micro_batch_size=micro, num_epochs=epochs, max_steps=1)
    assert len(list(step_plan(rows, capped, world))) == 1
