"""The weighted thought-mask loss: token cross-entropy, weighted per segment.

PTR phase 2 (docs/paper_notes.md, section 3): the released code trains on the answer only, with the
thoughts as unsupervised context. Here every token has a float loss weight: 0 on the query, the
template and masked thoughts; ``thought_weight`` (optionally growing as beta_t = beta0 * t / n) on
thought turns; ``answer_weight`` on the final answer.

Normalisation follows transformers' fix for gradient accumulation (``num_items_in_batch``): the
training loop passes the total weight of the whole optimizer step, summed over its micro-batches
and ranks, so every supervised token counts the same however the step is cut into micro-batches
and ranks. Without it the loss is normalised by this batch's own weight.
"""

import torch
import torch.nn.functional as F

from ptr_pipeline.schemas import IGNORE_INDEX


def supervised_weight(labels: torch.Tensor, loss_weights: torch.Tensor) -> torch.Tensor:
    """The total weight of the tokens ``weighted_thought_loss`` counts (shifted like the loss)."""
    return (loss_weights[:, 1:].float() * (labels[:, 1:] != IGNORE_INDEX)).sum()


def weighted_thought_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_weights: torch.Tensor,
    num_items_in_batch: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Weighted token cross-entropy: sum(w * ce) / normaliser.

    Args:
        logits: [b, s, v] model outputs.
        labels: [b, s] target ids aligned with the inputs (shifted here), IGNORE_INDEX where
            unsupervised.
        loss_weights: [b, s] float, aligned with ``labels``; ignored where the label is
            IGNORE_INDEX.
        num_items_in_batch: the normaliser, the summed weight of every supervised token in the
            optimizer step (all micro-batches, all ranks); None = this batch's own summed weight.

    Returns:
        A scalar tensor (float32).
    """
    logits = logits[:, :-1, :]  # position t predicts token t+1
    labels = labels[:, 1:]
    weights = loss_weights[:, 1:].to(torch.float32)
    ce = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )  # [b * (s-1)]
    w = weights.reshape(-1) * (labels.reshape(-1) != IGNORE_INDEX)
    if num_items_in_batch is None:
        num_items_in_batch = w.sum()
    total = torch.as_tensor(num_items_in_batch, dtype=torch.float32)
    return (ce * w).sum() / total.clamp_min(torch.finfo(torch.float32).tiny)
