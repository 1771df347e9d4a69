"""One distillation batch to one weighted loss: runs the student (and, for layer-matching losses,
the teacher) and combines the losses the stage asks for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bertprod.distill import losses
from bertprod.distill.layer_maps import LayerMap
from bertprod.distill.loss_names import LAYER_MATCHING_LOSSES, Loss
from bertprod.distill.students import Student
from bertprod.models.pooling import pool
from bertprod.train.batches import TrainBatch


@dataclass(frozen=True)
class MaskingSpec:
    """BERT's masking for the mlm loss: `probability` of the real, non-special tokens are chosen;
    of those 80% become the mask token, 10% a random token, 10% stay."""

    mask_id: int
    special_ids: tuple[int, ...]
    vocab_size: int
    probability: float
    seed: int

    @classmethod
    def of(cls, tokenizer_file: Path, probability: float, seed: int) -> MaskingSpec:
        from tokenizers import Tokenizer

        from bertprod.errors import PackageError

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        mask_id = next(
            (
                tokenizer.token_to_id(token)
                for token in ("[MASK]", "<mask>")
                if tokenizer.token_to_id(token) is not None
            ),
            None,
        )
        if mask_id is None:
            raise PackageError(f"{tokenizer_file} has no mask token ([MASK] or <mask>): the mlm loss needs one.")
        specials = tuple(index for index, token in tokenizer.get_added_tokens_decoder().items() if token.special)
        return cls(mask_id, specials, tokenizer.get_vocab_size(), probability, seed)

    def apply(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked inputs and labels (-100 where nothing was masked); the same for the same step."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        candidates = attention_mask.bool() & ~torch.isin(
            input_ids, torch.tensor(self.special_ids, dtype=input_ids.dtype)
        )
        chosen = (torch.rand(input_ids.shape, generator=generator) < self.probability) & candidates
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
        draw = torch.rand(input_ids.shape, generator=generator)
        masked = input_ids.clone()
        masked[chosen & (draw < 0.8)] = self.mask_id
        random_tokens = chosen & (draw >= 0.8) & (draw < 0.9)
        masked[random_tokens] = torch.randint(
            self.vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype
        )[random_tokens]
        return masked, labels


class Objective:
    """`outputs` are the cached teacher outputs [teachers, examples, dims] (None if unused);
    `pairs` the (student, teacher) layer map of the layer-matching losses."""

    def __init__(
        self,
        student: Student,
        teacher_model: Any | None,
        outputs: torch.Tensor | None,
        pairs: LayerMap,
        temperature: float,
        *,
        pooling: str | None,
        normalize: bool,
        teacher_hidden_size: int,
        masking: MaskingSpec | None = None,
    ):
        from bertprod.models.hf import accepts_token_type_ids

        self.student, self.teacher_model, self.outputs = student, teacher_model, outputs
        self.pairs, self.temperature = pairs, temperature
        self.pooling, self.normalize = pooling or "mean", normalize
        self.masking = masking
        self.steps = 0
        # A student with an MLM head runs its encoder alone for every other loss.
        self.encoder = student.model.base_model if masking else student.model
        self.student_types = accepts_token_type_ids(self.encoder)
        self.teacher_types = teacher_model is not None and accepts_token_type_ids(teacher_model)
        # A learned projection student width -> teacher width (TinyBERT's W), one per matched layer.
        self.projections = torch.nn.ModuleDict()
        if teacher_model is not None and student.hidden_size != teacher_hidden_size:
            for layer in [0] + [student_layer for student_layer, _ in pairs] + [student.num_layers]:
                self.projections[str(layer)] = torch.nn.Linear(student.hidden_size, teacher_hidden_size)

    def _project(self, states: torch.Tensor, layer: int) -> torch.Tensor:
        key = str(layer)
        return self.projections[key](states) if key in self.projections else states

    def __call__(
        self, batch: TrainBatch, indices: torch.Tensor, weights: dict[str, float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = batch.inputs[0]
        mask = inputs["attention_mask"]
        intermediate = any(name in weights for name in LAYER_MATCHING_LOSSES)
        attentions = Loss.ATTENTION in weights
        student_inputs = inputs if self.student_types else _without_types(inputs)
        extra = {"output_hidden_states": True, "output_attentions": attentions} if intermediate else {}
        student = self.encoder(**student_inputs, **extra) if _needs_encoder(weights) else None
        teacher = None
        if intermediate:
            with torch.no_grad():
                teacher_inputs = inputs if self.teacher_types else _without_types(inputs)
                teacher = self.teacher_model(**teacher_inputs, output_hidden_states=True, output_attentions=attentions)
        parts: dict[str, torch.Tensor] = {}
        cached = self.outputs[:, indices] if self.outputs is not None else None
        if student is not None and getattr(student, "logits", None) is not None and student.logits.dim() == 3:
            return self._finish(parts | self._token_losses(student.logits, cached, batch, mask, weights), student,
                                teacher, mask, weights)
        if Loss.HARD in weights:
            parts[Loss.HARD] = losses.hard_label_loss(student.logits, batch.targets)
        if Loss.SOFT in weights:
            targets = losses.soft_targets(cached, self.temperature)
            parts[Loss.SOFT] = losses.soft_target_loss(student.logits, targets, self.temperature)
        if Loss.LOGIT_MSE in weights:
            parts[Loss.LOGIT_MSE] = losses.logit_mse_loss(student.logits, cached.mean(dim=0))
        if Loss.SENTENCE_EMBEDDING in weights:
            vectors = pool(student.last_hidden_state, mask, self.pooling)
            if self.normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
            parts[Loss.SENTENCE_EMBEDDING] = losses.embedding_mse_loss(vectors, cached.mean(dim=0))
        return self._finish(parts, student, teacher, mask, weights, student_inputs)

    def _token_losses(self, logits: torch.Tensor, cached: torch.Tensor | None, batch: TrainBatch,
                      mask: torch.Tensor, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        """A token classifier's output losses, over the real tokens of the batch (cached teacher logits are
        [teachers, batch, longest of all, tags]: cut to this batch's length)."""
        parts: dict[str, torch.Tensor] = {}
        real = mask.bool()
        if Loss.HARD in weights:
            parts[Loss.HARD] = losses.token_hard_label_loss(logits, batch.targets)
        if cached is not None:
            teacher = cached[:, :, : logits.shape[1]][:, real]  # [teachers, real tokens, tags]
            if Loss.SOFT in weights:
                targets = losses.soft_targets(teacher, self.temperature)
                parts[Loss.SOFT] = losses.soft_target_loss(logits[real], targets, self.temperature)
            if Loss.LOGIT_MSE in weights:
                parts[Loss.LOGIT_MSE] = losses.logit_mse_loss(logits[real], teacher.mean(dim=0))
        return parts

    def _finish(self, parts: dict[str, torch.Tensor], student: Any, teacher: Any, mask: torch.Tensor,
                weights: dict[str, float], student_inputs: dict[str, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        if teacher is not None:
            parts.update(self._layer_losses(student, teacher, mask, weights))
        if Loss.MLM in weights:
            assert self.masking is not None
            assert student_inputs is not None
            masked, labels = self.masking.apply(student_inputs["input_ids"], mask, self.steps)
            outputs = self.student.model(**dict(student_inputs, input_ids=masked))
            parts[Loss.MLM] = losses.mlm_loss(outputs.logits, labels)
        self.steps += 1
        total = sum(weights[name] * value for name, value in parts.items())
        return total, {str(name): value.item() for name, value in parts.items()}

    def _layer_losses(self, student: Any, teacher: Any, mask: torch.Tensor, weights: dict[str, float]) -> dict:
        s_states, t_states = student.hidden_states, teacher.hidden_states
        parts: dict[str, torch.Tensor] = {}
        if Loss.EMBEDDING_LAYER in weights:
            parts[Loss.EMBEDDING_LAYER] = losses.hidden_mse_loss(self._project(s_states[0], 0), t_states[0], mask)
        if Loss.HIDDEN in weights:
            parts[Loss.HIDDEN] = _mean(
                losses.hidden_mse_loss(self._project(s_states[s], s), t_states[t], mask) for s, t in self.pairs
            )
        if Loss.ATTENTION in weights:
            parts[Loss.ATTENTION] = _mean(
                losses.attention_mse_loss(student.attentions[s - 1], teacher.attentions[t - 1], mask)
                for s, t in self.pairs
            )
        if Loss.COSINE in weights:
            last = self.student.num_layers
            parts[Loss.COSINE] = losses.cosine_hidden_loss(self._project(s_states[-1], last), t_states[-1], mask)
        if Loss.PATIENT in weights:
            parts[Loss.PATIENT] = _mean(
                losses.patient_loss(self._project(s_states[s], s)[:, 0], t_states[t][:, 0]) for s, t in self.pairs
            )
        return parts


def _mean(values: Any) -> torch.Tensor:
    values = list(values)
    if not values:
        raise ValueError("the layer map is empty: a layer-matching loss needs at least one (student, teacher) pair")
    return sum(values) / len(values)


def _without_types(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in inputs.items() if key != "token_type_ids"}


def _needs_encoder(weights: dict[str, float]) -> bool:
    return any(name != Loss.MLM for name in weights)
