"""The paper's three-term loss (Eq. 3.4, docs/paper_notes.md, section 3.1) as pure torch functions.

    L = lambda1 * answer_ce + lambda2 * consistency + lambda3 * confidence

The paper leaves F_cons and the confidence term undefined; the choices made here:

* answer_ce: the weighted token cross-entropy of ``loss.answer_ce`` (the ``answer_ce`` loss), at
  the positions the trainer kept.
* consistency: F_cons as a differentiable surrogate on the final-layer hidden states: for every
  sample and step t = 2..n, 1 - cosine(mean hidden of turn t, mean hidden of turn t-1), the earlier
  turn detached as a fixed reference. Minimising it rewards consistency (the paper's
  "+ lambda2 * F_cons" with F_cons a similarity would penalise it, section 3.1).
* confidence: for every sample and step t = 1..n, beta_t * (1 - mean token probability of turn t),
  beta_t = beta0 * t / n. The mean token probability stands in for Pr(y_t | ...), whose product
  over a long turn vanishes. It counts every token of turn t, supervised by the weights or not.

Layout (the trainer's): a micro-batch has ``b`` rows of width ``s``, possibly packed. ``sample_ids``
[b, s] is 0 on padding and 1..m for the micro-batch's samples (unique across it); ``turns`` [b, s]
is 0 outside assistant turns and 1..n for a sample's turns (n = the final answer). The LM head runs
at kept positions ``keep`` [k]; position p predicts token p+1, so the per-position tensors [b, k]
are shifted: ``logprobs`` is the log-probability of token p+1, ``next_sample_ids``,
``next_turns`` and ``next_weights`` are token p+1's.

Normalisation: each term is a sum over this micro-batch divided by a total of the whole optimizer
step (``total_weight`` for answer_ce, ``num_samples`` for the other two, all-reduced over
micro-batches and ranks by the trainer), so the micro-batch losses add up to the step's loss
however the step is cut. An all-padding micro-batch gives 0 with finite (zero) gradients.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ptr_pipeline.training.loss import answer_ce

_TINY = torch.finfo(torch.float32).tiny


def _per_step(x: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A step total as a float32 scalar on ``like``'s device, clamped away from 0."""
    return torch.as_tensor(x, dtype=torch.float32, device=like.device).clamp_min(_TINY)


def _groups(sample_ids: torch.Tensor, turns: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Per token, the flat group id sample * (n + 1) + turn; 0 for tokens outside any turn.

    Returns (group [N] int64, m = the largest sample id, n = the largest turn). Groups are the
    cells of an [m + 1, n + 1] grid; row 0 and column 0 collect nothing that is used.
    """
    inside = (sample_ids > 0) & (turns > 0)
    sid = torch.where(inside, sample_ids, 0).flatten()
    tid = torch.where(inside, turns, 0).flatten()
    m, n = torch.stack([sid.max(), tid.max()]).tolist() if sid.numel() else (0, 0)
    return sid * (n + 1) + tid, m, n


def consistency_loss(
    hidden: torch.Tensor,
    sample_ids: torch.Tensor,
    turns: torch.Tensor,
    num_samples: torch.Tensor | float,
) -> torch.Tensor:
    """Consistency between consecutive steps (paper's F_cons surrogate, section 3.1).

    For every sample and t = 2..n: 1 - cosine(h_t, stopgrad(h_{t-1})), h_t the mean of ``hidden``
    over the tokens of turn t (unshifted: the tokens themselves, not their predictions). Summed over
    samples and t, divided by ``num_samples``. A pair counts only if both turns are present.

    Args:
        hidden: [b, s, d] final-layer hidden states at every position, any float dtype (computed
            in float32).
        sample_ids: [b, s] int, 0 = padding, 1..m = samples.
        turns: [b, s] int, 0 = outside assistant turns, 1..n = the sample's turns.
        num_samples: number of samples in the whole optimizer step.

    Returns:
        A float32 scalar in [0, 2 * (max n - 1)] per sample; 0 = every step parallel to the last.
    """
    group, m, n = _groups(sample_ids, turns)
    h = hidden.float().reshape(-1, hidden.size(-1))
    sums = h.new_zeros((m + 1) * (n + 1), h.size(1)).index_add_(0, group, h)
    counts = h.new_zeros((m + 1) * (n + 1)).index_add_(0, group, h.new_ones(group.numel()))
    means = (sums / counts.clamp_min(1)[:, None]).view(m + 1, n + 1, -1)  # [m+1, n+1, d]
    present = (counts > 0).view(m + 1, n + 1)
    # Column j of the pair grids is the pair (t-1, t) = (j+1, j+2), t = 2..n.
    cur, prev = means[:, 2:], means[:, 1:-1].detach()
    valid = present[:, 2:] & present[:, 1:-1]
    dist = 1 - F.cosine_similarity(cur, prev, dim=-1)  # [m+1, n-1]
    return (dist * valid).sum() / _per_step(num_samples, hidden)


def confidence_loss(
    logprobs: torch.Tensor,
    next_sample_ids: torch.Tensor,
    next_turns: torch.Tensor,
    beta0: float,
    num_samples: torch.Tensor | float,
) -> torch.Tensor:
    """Confidence progression (paper's third term, section 3.1).

    For every sample and t = 1..n: beta_t * (1 - mean over turn t's tokens of exp(logprobs)),
    beta_t = beta0 * t / n with n the sample's number of turns (its largest ``next_turns``). The
    tokens of turn t are the positions whose next token is in turn t; every one must be kept.
    Summed over samples and t, divided by ``num_samples``.

    Args:
        logprobs: [b, k] float log-probability of the actual next token at the kept positions.
        next_sample_ids: [b, k] int, the next token's sample id (0 = padding).
        next_turns: [b, k] int, the next token's turn (0 = outside assistant turns).
        beta0: the weight of the last step (beta_n = beta0).
        num_samples: number of samples in the whole optimizer step.

    Returns:
        A float32 scalar, in [0, beta0 * (n + 1) / 2] per sample.
    """
    group, m, n = _groups(next_sample_ids, next_turns)
    inside = ((next_sample_ids > 0) & (next_turns > 0)).flatten().float()
    p = logprobs.float().flatten().exp() * inside
    sums = p.new_zeros((m + 1) * (n + 1)).index_add_(0, group, p).view(m + 1, n + 1)
    counts = p.new_zeros((m + 1) * (n + 1)).index_add_(0, group, inside).view(m + 1, n + 1)
    present = counts > 0  # column 0 only ever counts 0 tokens
    t = torch.arange(n + 1, device=p.device)
    num_turns = (present * t).amax(dim=1, keepdim=True).clamp_min(1)  # [m+1, 1], each sample's n
    beta = beta0 * t / num_turns  # [m+1, n+1]
    shortfall = 1 - sums / counts.clamp_min(1)
    return (beta * shortfall * present).sum() / _per_step(num_samples, logprobs)


def ptr3_loss(
    logprobs: torch.Tensor,
    next_weights: torch.Tensor,
    next_sample_ids: torch.Tensor,
    next_turns: torch.Tensor,
    hidden: torch.Tensor | None,
    sample_ids: torch.Tensor,
    turns: torch.Tensor,
    total_weight: torch.Tensor | float,
    num_samples: torch.Tensor | float,
    lambdas: Sequence[float],
    beta0: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 3.4: lambda1 * answer_ce + lambda2 * consistency + lambda3 * confidence.

    A term whose lambda is 0 is not computed (``hidden`` may be None when lambda2 == 0) and is
    left out of the parts. Arguments as in ``loss.answer_ce``, ``consistency_loss`` and
    ``confidence_loss``.

    Returns:
        (the float32 scalar loss, the unweighted terms computed, detached, for the log:
        "answer_ce", "consistency", "confidence").
    """
    lam1, lam2, lam3 = lambdas
    if lam2 and hidden is None:
        raise ValueError("ptr3_loss: lambda2 > 0 needs the hidden states")
    loss = logprobs.new_zeros((), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if lam1:
        parts["answer_ce"] = term = answer_ce(logprobs, next_weights, total_weight)
        loss = loss + lam1 * term
    if lam2:
        parts["consistency"] = term = consistency_loss(hidden, sample_ids, turns, num_samples)
        loss = loss + lam2 * term
    if lam3:
        parts["confidence"] = term = confidence_loss(
            logprobs, next_sample_ids, next_turns, beta0, num_samples
        )
        loss = loss + lam3 * term
    return loss, {name: term.detach() for name, term in parts.items()}
