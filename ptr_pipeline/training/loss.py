"""The weighted thought-mask loss: token cross-entropy, weighted per segment.

PTR phase 2 (docs/paper_notes.md, section 3): the released code trains on the answer only, with the
thoughts as unsupervised context. Here every token has a float loss weight: 0 on the query, the
template and masked thoughts; ``thought_weight`` (optionally growing as beta_t = beta0 * t / n) on
thought turns; ``answer_weight`` on the final answer.

Normalisation follows transformers' fix for gradient accumulation (``num_items_in_batch``): the
training loop passes the total weight of the whole optimizer step, summed over its micro-batches
and ranks, so every supervised token counts the same however the step is cut into micro-batches
and ranks. Without it the loss is normalised by this batch's own weight.

This is ``loss: answer_ce``; ``loss: ptr3`` (the paper's Eq. 3.4) adds two terms in ``ptr3.py``.
The trainer computes logits only at ``supervised_positions``; ``weighted_thought_loss`` is the same
loss over full logits.
"""

import torch
import torch.nn.functional as F

from ptr_pipeline.schemas import IGNORE_INDEX


def supervised_weight(labels: torch.Tensor, loss_weights: torch.Tensor) -> torch.Tensor:
    """The total weight of the tokens ``weighted_thought_loss`` counts (shifted like the loss)."""
    return (loss_weights[:, 1:].float() * (labels[:, 1:] != IGNORE_INDEX)).sum()


def supervised_positions(labels: torch.Tensor, turns: torch.Tensor | None = None) -> torch.Tensor:
    """The positions whose logits a loss needs: p in 0..s-2 where the next token is supervised in
    any row (or, given ``turns``, belongs to an assistant turn). LongTensor [k], k >= 1 (position 0
    when nothing is, so a weightless micro-batch still runs the model).

    Passed to the model as ``logits_to_keep`` (an index tensor in transformers 5), the LM head and
    the float32 log-softmax run at these k positions only, instead of all b x s.
    """
    wanted = labels[:, 1:] != IGNORE_INDEX
    if turns is not None:
        wanted |= turns[:, 1:] > 0
    keep = wanted.any(dim=0).nonzero().squeeze(-1)
    return keep if keep.numel() else torch.zeros(1, dtype=torch.long, device=labels.device)


def next_token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) in float32: ``logits`` [b, k, v] (any dtype), ``targets`` [b, k] ids (any id
    where the caller gives zero weight). Returns [b, k]."""
    b, k, v = logits.shape
    return -F.cross_entropy(
        logits.reshape(-1, v).float(), targets.reshape(-1).clamp_min(0), reduction="none"
    ).view(b, k)


def answer_ce(
    logprobs: torch.Tensor,
    next_weights: torch.Tensor,
    total_weight: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Weighted token cross-entropy: sum(w x -log p) / ``total_weight`` (None: sum(w) here).

    Args:
        logprobs: [b, k] float32 log-probabilities of the next tokens (``next_token_logprobs``).
        next_weights: [b, k] their loss weights, 0 where unsupervised.
        total_weight: the summed weight of the whole optimizer step (all micro-batches, ranks).
    """
    w = next_weights.to(torch.float32)
    total = w.sum() if total_weight is None else total_weight
    total = torch.as_tensor(total, dtype=torch.float32, device=w.device)
    return -(logprobs * w).sum() / total.clamp_min(torch.finfo(torch.float32).tiny)


def weighted_thought_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_weights: torch.Tensor,
    num_items_in_batch: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Weighted token cross-entropy over full logits: sum(w * ce) / normaliser.

    Args:
        logits: [b, s, v] model outputs at every position.
        labels: [b, s] target ids aligned with the inputs (shifted here), IGNORE_INDEX where
            unsupervised.
        loss_weights: [b, s] float, aligned with ``labels``; ignored where the label is
            IGNORE_INDEX.
        num_items_in_batch: the normaliser, the summed weight of every supervised token in the
            optimizer step (all micro-batches, all ranks); None = this batch's own summed weight.

    Returns:
        A scalar tensor (float32): ``answer_ce`` at every position.
    """
    labels = labels[:, 1:]  # position t predicts token t+1
    weights = loss_weights[:, 1:].to(torch.float32) * (labels != IGNORE_INDEX)
    logprobs = next_token_logprobs(logits[:, :-1, :], labels)
    return answer_ce(logprobs, weights, num_items_in_batch)
