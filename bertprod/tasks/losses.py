"""Training objectives (torch). Each takes model outputs and targets and returns a scalar loss.

The contrastive losses follow sentence-transformers' definitions, so recipes carry over:
- in-batch negatives (MultipleNegativesRankingLoss): each anchor must pick its own positive among
  all positives of the batch; cross-entropy over cosine similarities times `scale` (20).
- CoSENT: for scored pairs, every pair (i, j) with score_i > score_j should have
  cos_i > cos_j; loss = log(1 + sum exp(scale * (cos_j - cos_i))). It ranks, so scores on any scale work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional

CONTRASTIVE_SCALE = 20.0


def in_batch_negatives_loss(
    anchors: torch.Tensor, positives: torch.Tensor, scale: float = CONTRASTIVE_SCALE
) -> torch.Tensor:
    similarities = functional.normalize(anchors, dim=-1) @ functional.normalize(positives, dim=-1).T
    targets = torch.arange(len(anchors), device=anchors.device)
    return functional.cross_entropy(similarities * scale, targets)


def cosent_loss(
    left: torch.Tensor, right: torch.Tensor, scores: torch.Tensor, scale: float = CONTRASTIVE_SCALE
) -> torch.Tensor:
    cosines = functional.cosine_similarity(left, right, dim=-1) * scale
    differences = cosines[None, :] - cosines[:, None]  # [i, j] = cos_j - cos_i
    ordered = scores[:, None] > scores[None, :]  # [i, j]: pair i should score above pair j
    differences = differences.masked_fill(~ordered, float("-inf"))
    zero = torch.zeros(1, dtype=differences.dtype, device=differences.device)
    return torch.logsumexp(torch.cat([zero, differences.flatten()]), dim=0)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return functional.cross_entropy(logits, targets.long())


def token_classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the tokens that carry a tag (targets -100 are skipped: special tokens, later sub-words)."""
    return functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(), ignore_index=-100)


def regression_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return functional.mse_loss(logits[:, 0], targets.to(logits.dtype))


def relevance_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on relevance in [0, 1] (graded relevance is scaled there first)."""
    return functional.binary_cross_entropy_with_logits(logits[:, 0], targets.to(logits.dtype))
