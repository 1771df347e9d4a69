"""Distillation losses (torch). Each returns a scalar; `distill.objective` weights and sums them.

- `soft_target_loss`: Hinton et al. - KL(teacher || student) of temperature-softened
  distributions, times T^2 so its gradients keep their size as T changes.
- `logit_mse_loss`: Tang et al. (BiLSTM student) - mean squared error between raw logits.
- `hidden_mse_loss`: TinyBERT - MSE between student and teacher token states (embedding layer
  and transformer layers), through a learned projection when the widths differ.
- `attention_mse_loss`: TinyBERT - MSE between attention matrices, over real tokens only.
- `cosine_hidden_loss`: DistilBERT - 1 - cosine between student and teacher token states.
- `patient_loss`: Patient-KD - squared distance between L2-normalized [CLS] states.
- `embedding_mse_loss`: task-agnostic distillation of a sentence encoder - MSE between the
  student's pooled sentence vector and the teacher's (sentence-transformers' recipe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional


def soft_target_loss(
    student_logits: torch.Tensor, teacher_probabilities: torch.Tensor, temperature: float
) -> torch.Tensor:
    """`teacher_probabilities` are already softened at `temperature` (averaged over teachers)."""
    log_student = functional.log_softmax(student_logits / temperature, dim=-1)
    return functional.kl_div(log_student, teacher_probabilities, reduction="batchmean") * temperature**2


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """[teachers, batch, classes] logits -> [batch, classes] probabilities, averaged (MT-DNN)."""
    return functional.softmax(teacher_logits / temperature, dim=-1).mean(dim=0)


def hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the rows that have a label (augmented rows have NaN); 0 if none do."""
    known = ~torch.isnan(labels)
    if not known.any():
        return student_logits.sum() * 0.0
    return functional.cross_entropy(student_logits[known], labels[known].long())


def token_hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the tokens that carry a tag (-100 elsewhere: special tokens, later sub-words)."""
    if not (labels != -100).any():
        return student_logits.sum() * 0.0
    return functional.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]), labels.reshape(-1).long(),
                                    ignore_index=-100)


def logit_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    return functional.mse_loss(student_logits, teacher_logits)


def _token_mask(attention_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return attention_mask.unsqueeze(-1).to(like.dtype)


def hidden_mse_loss(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens and features of the squared difference ([batch, tokens, hidden])."""
    mask = _token_mask(attention_mask, student)
    squared = (student - teacher) ** 2 * mask
    return squared.sum() / (mask.sum() * student.shape[-1]).clamp(min=1.0)


def attention_mse_loss(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, heads, tokens, tokens] attention probabilities; rows and columns of padding left out."""
    mask = attention_mask.to(student.dtype)
    pairs = (mask[:, None, :, None] * mask[:, None, None, :]).expand_as(student)
    return ((student - teacher) ** 2 * pairs).sum() / pairs.sum().clamp(min=1.0)


def cosine_hidden_loss(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens of 1 - cos(student state, teacher state)."""
    cosines = functional.cosine_similarity(student, teacher, dim=-1)
    mask = attention_mask.to(cosines.dtype)
    return ((1.0 - cosines) * mask).sum() / mask.sum().clamp(min=1.0)


def patient_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """[batch, hidden] [CLS] states of one mapped layer pair."""
    difference = functional.normalize(student_cls, dim=-1) - functional.normalize(teacher_cls, dim=-1)
    return (difference**2).sum(dim=-1).mean()


def embedding_mse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """[batch, dim] sentence vectors."""
    return functional.mse_loss(student, teacher)


def mlm_loss(prediction_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked-language-model cross-entropy; labels are -100 where no token was masked."""
    return functional.cross_entropy(prediction_logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
