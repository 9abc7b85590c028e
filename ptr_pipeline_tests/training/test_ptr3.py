"""The paper's three-term loss (training.ptr3) on handcrafted micro-batches in the trainer's layout."""

import math

import pytest
import torch
import torch.nn.functional as F

from ptr_pipeline.schemas import IGNORE_INDEX
from ptr_pipeline.training.loss import answer_ce, weighted_thought_loss
from ptr_pipeline.training.ptr3 import confidence_loss, consistency_loss, ptr3_loss

D, V, BETA0 = 4, 7, 0.7


def sample(turn_lens: list[int], seed: int, thought_weight: float = 0.5) -> dict:
    """One sample: 2 query tokens, then per turn a template token and the turn's tokens.

    Per token: ``turns``, ``weights`` (0 outside turns, ``thought_weight`` on thoughts, 1 on the
    answer), ``hidden`` [L, D], and ``lp`` = the log-probability of this token given the ones before.
    """
    turns = [0, 0]
    for t, n in enumerate(turn_lens, 1):
        turns += [0] + [t] * n
    turns = torch.tensor(turns)
    last = len(turn_lens)
    weights = torch.where(turns == last, 1.0, torch.where(turns > 0, thought_weight, 0.0))
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(len(turns), D, generator=g)
    lp = -torch.rand(len(turns), generator=g) * 3
    return {"turns": turns, "weights": weights, "hidden": hidden, "lp": lp}


SAMPLES = [sample([2, 3], 1), sample([3], 2), sample([1, 2, 2], 3), sample([2, 1, 3, 2], 4)]


def layout(rows: list[list[dict]], s: int = 20, seed: int = 0) -> dict:
    """Packs the samples of each row into [b, s] tensors; ids 1..m in order; random padding."""
    g = torch.Generator().manual_seed(seed)
    b = len(rows)
    out = {
        "sample_ids": torch.zeros(b, s, dtype=torch.long),
        "turns": torch.zeros(b, s, dtype=torch.long),
        "weights": torch.zeros(b, s),
        "hidden": torch.randn(b, s, D, generator=g),  # padding values must not matter
        "lp": -torch.rand(b, s, generator=g),
    }
    sid = 0
    for r, row in enumerate(rows):
        at = 0
        for smp in row:
            sid += 1
            span = slice(at, at + len(smp["turns"]))
            out["sample_ids"][r, span] = sid
            for key in ("turns", "weights", "hidden", "lp"):
                out[key][r, span] = smp[key]
            at = span.stop
        assert at <= s
    return out


def kept(batch: dict) -> dict:
    """The trainer's view: keep = positions whose next token is in a turn or weighted, shifted."""
    nxt = (batch["turns"][:, 1:] > 0) | (batch["weights"][:, 1:] > 0)
    keep = nxt.any(0).nonzero().flatten()
    return {
        "logprobs": batch["lp"][:, keep + 1],
        "next_weights": batch["weights"][:, keep + 1],
        "next_sample_ids": batch["sample_ids"][:, keep + 1],
        "next_turns": batch["turns"][:, keep + 1],
        "hidden": batch["hidden"],
        "sample_ids": batch["sample_ids"],
        "turns": batch["turns"],
    }


def terms(v: dict, total_weight, num_samples) -> dict[str, float]:
    return {
        "answer_ce": answer_ce(v["logprobs"], v["next_weights"], total_weight).item(),
        "consistency": consistency_loss(
            v["hidden"], v["sample_ids"], v["turns"], num_samples
        ).item(),
        "confidence": confidence_loss(
            v["logprobs"], v["next_sample_ids"], v["next_turns"], BETA0, num_samples
        ).item(),
    }


def reference(samples: list[dict], total_weight: float, num_samples: float) -> dict[str, float]:
    """Each term computed sample by sample, turn by turn, from the samples' own tokens."""
    ce = cons = conf = 0.0
    for smp in samples:
        turns, hidden, lp = smp["turns"], smp["hidden"], smp["lp"]
        ce += sum(-w * x for w, x in zip(smp["weights"].tolist(), lp.tolist(), strict=True))
        n = int(turns.max())
        for t in range(2, n + 1):
            cur, prev = hidden[turns == t].mean(0), hidden[turns == t - 1].mean(0)
            cons += 1 - F.cosine_similarity(cur, prev, dim=0).item()
        for t in range(1, n + 1):
            conf += BETA0 * t / n * (1 - lp[turns == t].exp().mean().item())
    return {
        "answer_ce": ce / total_weight,
        "consistency": cons / num_samples,
        "confidence": conf / num_samples,
    }


def step_totals(samples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    total_weight = sum(smp["weights"].sum() for smp in samples)
    return torch.as_tensor(total_weight, dtype=torch.float32), torch.tensor(float(len(samples)))


def approx(d: dict[str, float]) -> dict:
    return {k: pytest.approx(x, rel=1e-5, abs=1e-7) for k, x in d.items()}


def logits_batch(seed: int = 0):
    """A full-logits batch: input ids, labels (IGNORE_INDEX off the turns), weights, turns."""
    g = torch.Generator().manual_seed(seed)
    batch = layout([[SAMPLES[0], SAMPLES[1]], [SAMPLES[2]]], s=20, seed=seed)
    input_ids = torch.randint(0, V, batch["turns"].shape, generator=g)
    labels = torch.where(batch["weights"] > 0, input_ids, IGNORE_INDEX)
    logits = torch.randn(*input_ids.shape, V, generator=g)
    return batch, input_ids, labels, logits


def logprobs_at(logits: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor):
    """The trainer's logprobs: log-probability of token p+1 at each kept position p."""
    target = input_ids[:, keep + 1]
    return torch.log_softmax(logits[:, keep], -1).gather(-1, target[..., None])[..., 0]


# (a) answer_ce is the released weighted cross-entropy


def test_answer_ce_at_all_positions_equals_weighted_thought_loss():
    batch, input_ids, labels, logits = logits_batch()
    s = input_ids.size(1)
    keep = torch.arange(s - 1)
    logprobs = logprobs_at(logits, input_ids, keep)
    next_weights = batch["weights"][:, keep + 1]
    total_weight = next_weights.sum() * 1.5  # as if other micro-batches shared the step
    ce = answer_ce(logprobs, next_weights, total_weight)
    expected = weighted_thought_loss(logits, labels, batch["weights"], total_weight)
    assert expected.item() > 0
    assert ce.item() == pytest.approx(expected.item(), rel=1e-6)
    loss, parts = ptr3_loss(
        logprobs, next_weights, None, None, None, None, None, total_weight, 3.0, (1, 0, 0), BETA0
    )
    assert loss.item() == ce.item()  # exact: the skipped terms add nothing
    assert {k: v.item() for k, v in parts.items()} == {"answer_ce": ce.item()}  # skipped: absent


def test_ptr3_loss_is_the_lambda_weighted_sum_of_its_terms():
    batch = layout([[SAMPLES[0], SAMPLES[1]], [SAMPLES[2], SAMPLES[3]]], s=30)
    v = kept(batch)
    total_weight, num_samples = step_totals(SAMPLES)
    parts = terms(v, total_weight, num_samples)
    totals = {"total_weight": total_weight, "num_samples": num_samples}
    loss, logged = ptr3_loss(**v, **totals, lambdas=(0.6, 0.3, 0.1), beta0=BETA0)
    assert {k: v.item() for k, v in logged.items()} == approx(parts)
    expected = 0.6 * parts["answer_ce"] + 0.3 * parts["consistency"] + 0.1 * parts["confidence"]
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert min(parts.values()) > 0
    with pytest.raises(ValueError, match="hidden"):
        ptr3_loss(**{**v, "hidden": None}, **totals, lambdas=(0.6, 0.3, 0.1), beta0=BETA0)


# (b) each term against a direct computation


def test_terms_match_a_sample_by_sample_computation():
    batch = layout([[SAMPLES[0], SAMPLES[1]], [SAMPLES[2], SAMPLES[3]]], s=30)
    total_weight, num_samples = step_totals(SAMPLES)
    got = terms(kept(batch), total_weight, num_samples)
    assert got == approx(reference(SAMPLES, total_weight.item(), num_samples.item()))


def test_terms_on_hand_numbers():
    # One sample, query token then turn 1 (2 tokens) and turn 2 (2 tokens).
    sample_ids = torch.tensor([[1, 1, 1, 1, 1, 0]])
    turns = torch.tensor([[0, 1, 1, 2, 2, 0]])
    hidden = torch.tensor([[[9.0, 9], [1, 0], [3, 0], [1, 1], [3, 3], [9, -9]]])
    # turn 1 pools to (2, 0), turn 2 to (2, 2): 1 - cos 45 degrees
    cons = consistency_loss(hidden, sample_ids, turns, 2.0)
    assert cons.item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2, rel=1e-6)
    # Turn 1's tokens have probabilities 0.5, 0.5 and turn 2's 1.0, 0.5; n = 2, beta0 = 1:
    # 1/2 * (1 - 0.5) + 2/2 * (1 - 0.75) = 0.5
    keep = torch.arange(5)
    probs = torch.tensor([[0.5, 0.5, 1.0, 0.5, 0.01]])
    conf = confidence_loss(probs.log(), sample_ids[:, keep + 1], turns[:, keep + 1], 1.0, 2.0)
    assert conf.item() == pytest.approx(0.5 / 2, rel=1e-6)


def test_bfloat16_hidden_states_are_pooled_in_float32():
    batch = layout([[SAMPLES[3]]], s=20)
    h = batch["hidden"].to(torch.bfloat16)
    got = consistency_loss(h, batch["sample_ids"], batch["turns"], 1.0)
    expected = consistency_loss(h.float(), batch["sample_ids"], batch["turns"], 1.0)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


# (c) gradients


def test_gradients_are_finite_nonzero_and_stop_at_the_earlier_turn():
    batch, input_ids, _, logits = logits_batch()
    logits.requires_grad_(True)
    hidden = batch["hidden"].clone().requires_grad_(True)
    keep = torch.arange(input_ids.size(1) - 1)
    nxt = {k: batch[k][:, keep + 1] for k in ("weights", "sample_ids", "turns")}
    total_weight, num_samples = torch.tensor(10.0), torch.tensor(3.0)

    ce = answer_ce(logprobs_at(logits, input_ids, keep), nxt["weights"], total_weight)
    (g_ce,) = torch.autograd.grad(ce, logits)
    conf = confidence_loss(
        logprobs_at(logits, input_ids, keep), nxt["sample_ids"], nxt["turns"], BETA0, num_samples
    )
    (g_conf,) = torch.autograd.grad(conf, logits)
    cons = consistency_loss(hidden, batch["sample_ids"], batch["turns"], num_samples)
    (g_cons,) = torch.autograd.grad(cons, hidden)
    for g in (g_ce, g_conf, g_cons):
        assert torch.isfinite(g).all() and g.abs().sum() > 0

    moved = g_cons.abs().sum(-1) > 0  # [b, s]: which tokens' hidden states get a gradient
    turns, ids = batch["turns"], batch["sample_ids"]
    # Row 0 packs SAMPLES[0] (2 turns) and SAMPLES[1] (1 turn); row 1 holds SAMPLES[2] (3 turns).
    assert not moved[turns <= 1].any()  # turn 1 is only ever the detached reference
    assert not moved[ids == 2].any()  # a one-turn sample has no pair
    assert moved[(ids == 1) & (turns == 2)].all()
    assert moved[(ids == 3) & (turns >= 2)].all()


# (d) cut invariance, (e) packing


def test_micro_batch_parts_add_up_to_the_whole_step():
    total_weight, num_samples = step_totals(SAMPLES)
    whole = layout([[SAMPLES[0], SAMPLES[1]], [SAMPLES[2]], [SAMPLES[3]]], s=22)
    first = layout([[SAMPLES[0], SAMPLES[1]]], s=22)  # ids 1, 2
    second = layout([[SAMPLES[2]], [SAMPLES[3]]], s=22)  # renumbered 1, 2
    w, a, b = (terms(kept(x), total_weight, num_samples) for x in (whole, first, second))
    assert {k: a[k] + b[k] for k in w} == approx(w)
    assert w == approx(reference(SAMPLES, total_weight.item(), num_samples.item()))


def test_packed_row_equals_one_sample_per_row():
    total_weight, num_samples = step_totals(SAMPLES[2:])
    packed = layout([[SAMPLES[2], SAMPLES[3]]], s=30, seed=1)
    unpacked = layout([[SAMPLES[2]], [SAMPLES[3]]], s=20, seed=2)
    got = terms(kept(packed), total_weight, num_samples)
    assert got == approx(terms(kept(unpacked), total_weight, num_samples))
    assert got == approx(reference(SAMPLES[2:], total_weight.item(), num_samples.item()))


# (f) an all-padding micro-batch


@pytest.mark.parametrize("k", [0, 5])
@pytest.mark.parametrize("totals", [(0.0, 0.0), (12.0, 4.0)])
def test_all_padding_micro_batch_is_zero_with_finite_gradients(k, totals):
    b, s = 2, 6
    logits = torch.randn(b, k, V, requires_grad=True)
    logprobs = torch.log_softmax(logits, -1)[..., 0]
    hidden = torch.randn(b, s, D, requires_grad=True)
    zeros_k, zeros_s = torch.zeros(b, k, dtype=torch.long), torch.zeros(b, s, dtype=torch.long)
    loss, parts = ptr3_loss(
        logprobs,
        torch.zeros(b, k),
        zeros_k,
        zeros_k,
        hidden,
        zeros_s,
        zeros_s,
        torch.tensor(totals[0]),
        torch.tensor(totals[1]),
        (0.4, 0.3, 0.3),
        BETA0,
    )
    assert loss.item() == 0.0
    assert {k: v.item() for k, v in parts.items()} == {
        "answer_ce": 0.0,
        "consistency": 0.0,
        "confidence": 0.0,
    }
    loss.backward()
    for g in (logits.grad, hidden.grad):
        assert torch.isfinite(g).all() and not g.any()
