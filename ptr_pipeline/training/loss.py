"""The weighted thought-mask loss: token cross-entropy, weighted per segment.

PTR phase 2 (https://huggingface.co/papers/2410.13413; paper notes section 3): the released code
trains on the answer only, with the thoughts as unsupervised context. Here every token has a float
weight: 0 on the query, the template and masked thoughts; ``thought_weight`` (optionally growing
as beta_t = beta0 * t / n) on thought rounds; ``answer_weight`` on the final answer. The loss is
normalised by the summed weight, so it equals plain answer-only CE when thoughts are masked and
the answer weight is 1.
"""

import torch
import torch.nn.functional as F

from ptr_pipeline.schemas import IGNORE_INDEX


def weighted_thought_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted token CE, normalised by the total weight of the supervised tokens.

    Args:
        logits: [b, s, v] model outputs.
        labels: [b, s] target ids aligned with the inputs (shifted here), IGNORE_INDEX where unsupervised.
        weights: [b, s] float, aligned with ``labels``; ignored where the label is IGNORE_INDEX.

    Returns:
        A scalar: sum(w * ce) / sum(w) over all supervised tokens of the batch.
    """
    logits = logits[:, :-1, :]  # position t predicts token t+1
    labels = labels[:, 1:]
    weights = weights[:, 1:].to(torch.float32)
    ce = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )  # [b * (s-1)]
    w = weights.reshape(-1) * (labels.reshape(-1) != IGNORE_INDEX)
    return (ce * w).sum() / w.sum().clamp_min(torch.finfo(torch.float32).tiny)
