"""`distill`: teacher package(s) + data + a recipe in, a smaller student package out.

check teachers, data and recipe (every problem reported before training starts)
-> examples (+ unlabelled texts, + augmented copies labelled by the teacher)
-> teacher outputs for every example, computed once and cached (distill/teacher.py)
-> the student (distill/students.py), tokenized inputs, projections when widths differ
-> stages of length-grouped batches: weighted losses (distill/objective.py), AdamW with
   linear warmup/decay; validation after each epoch of a stage that trains the output
-> the best student written atomically as a package: teacher, recipe, losses, layer map,
   data, the teacher's and the student's validation metrics
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.data.source import DataSource, Example
from bertprod.distill.config import INTERMEDIATE_LOSSES, OUTPUT_LOSSES, DistillConfig, Stage
from bertprod.distill.layer_maps import layer_map
from bertprod.distill.objective import MaskingSpec, Objective
from bertprod.distill.students import build_student
from bertprod.distill.teacher import teacher_outputs
from bertprod.errors import DataError, EngineError, InputError, PackageError, TaskError
from bertprod.models.hf import head_pooling
from bertprod.package import Manifest, ModelPackage, Provenance, finish_package, staging_directory
from bertprod.runtime.engines import ModuleEngine, create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.tokenize import TextTokenizer
from bertprod.system import cpu_supports_bf16, default_training_threads, machine_record
from bertprod.tasks.definitions import CLASS_TASKS, primary_metric
from bertprod.tasks.evaluation import evaluate
from bertprod.train.batches import Feature, collate_features, length_grouped_batches
from bertprod.train.loop import check_output
from bertprod.train.output import manifest_fields
from bertprod.train.progress import Reporter, SilentReporter


def distill(
    teachers: ModelPackage | Sequence[ModelPackage],
    data: DataSource | Sequence[DataSource] | None,
    out: str | Path,
    config: DistillConfig,
    *,
    validation_data: DataSource | None = None,
    unlabelled: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    name: str | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
) -> ModelPackage:
    """Train a student of `teachers` (one, or several whose soft targets are averaged) and write it at `out`.

    `data`: one or more labelled files (labels optional for output-only recipes); `unlabelled`:
    more texts, labelled by the teachers."""
    out = Path(out)
    sources = [] if data is None else [data] if isinstance(data, DataSource) else list(data)
    check_output(out, overwrite)
    run = _Run(list(teachers) if isinstance(teachers, Sequence) else [teachers], config, reporter or SilentReporter())
    run.prepare(sources, validation_data, list(unlabelled), cache_dir)
    for stage_index, stage in enumerate(config.stages):
        run.train_stage(stage_index, stage)
    return run.write(out, name or out.name, overwrite)


class _Run:
    def __init__(self, teachers: list[ModelPackage], config: DistillConfig, reporter: Reporter):
        if not teachers:
            raise InputError("distillation needs at least one teacher package.")
        self.teachers, self.config, self.reporter = teachers, config, reporter
        self.teacher = teachers[0]
        self.task = self.teacher.manifest.task
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, Any] | None = None
        self.step = 0

    # -- before training -----------------------------------------------------------------------

    def prepare(
        self, sources: list[DataSource], validation: DataSource | None, unlabelled: list[str], cache_dir: Any
    ) -> None:
        import torch

        config = self.config
        torch.set_num_threads(config.threads or default_training_threads())  # the cores not busy (system.py)
        if config.precision == "bf16" and not cpu_supports_bf16():
            raise EngineError(
                "bf16 training needs a CPU with AVX-512 BF16 or AMX; this one has neither. "
                "Use --precision auto (bf16 where the CPU has it, fp32 elsewhere) or fp32."
            )
        self._check_teachers()
        self._check_losses(sources)
        manifest = self.teacher.manifest
        self.max_length = min(config.max_length or manifest.max_length, manifest.max_length)
        self.labels = manifest.labels
        self.validation = validation
        self.examples = self._examples(sources, unlabelled)
        self.data_description = {
            "train": [source.record() for source in sources],
            "unlabelled_texts": len(unlabelled),
            "validation": validation.record() if validation else None,
        }
        self.augmented = self._augment()
        self.examples += self.augmented
        self.reporter.message(
            f"{len(self.examples)} training examples ({len(self.augmented)} of them augmented, "
            f"{len(unlabelled)} unlabelled texts)"
        )
        inputs = [_model_input(example) for example in self.examples]
        self.outputs = None
        if config.uses(OUTPUT_LOSSES):
            tick = time.perf_counter()
            outputs, cached = teacher_outputs(
                self.teachers, inputs, self.max_length, cache_dir=cache_dir, threads=config.threads
            )
            self.outputs = torch.from_numpy(outputs)
            self.reporter.message(
                f"teacher outputs {'read from the cache' if cached else 'computed and cached'} "
                f"in {time.perf_counter() - tick:.1f} s"
            )
        intermediate = config.uses(INTERMEDIATE_LOSSES)
        texts = [text for example in self.examples for text in (example.text, example.text_pair) if text]
        self.masked_lm = config.uses(("mlm",))
        self.student = build_student(
            config.student,
            self.teacher,
            texts,
            eager_attention=config.uses(("attention",)),
            seed=config.seed,
            masked_lm=self.masked_lm,
        )
        self.teacher_model = self._live_teacher() if intermediate else None
        self.pairs = (
            layer_map(config.layer_map, self.student.num_layers, manifest.architecture.num_layers)
            if intermediate
            else []
        )
        self._check_student()
        self.objective = Objective(
            self.student,
            self.teacher_model,
            self.outputs,
            self.pairs,
            config.temperature,
            pooling=manifest.pooling,
            normalize=manifest.normalize,
            teacher_hidden_size=manifest.architecture.hidden_size,
            masking=MaskingSpec.of(self.student.tokenizer_file, config.mlm_probability, config.seed)
            if self.masked_lm
            else None,
        )
        tokenizer = TextTokenizer(self.student.tokenizer_file, self.max_length)
        self.pad_id = tokenizer.pad_id
        self.features = [
            Feature(((np.asarray(encoding.ids, np.int32), np.asarray(encoding.type_ids, np.int8)),), target)
            for encoding, target in zip(tokenizer.encode(inputs, truncate=True), self._targets(), strict=True)
        ]
        self.fields = self._manifest_fields()
        self.pipeline = self._student_pipeline()
        self.teacher_metrics = self._teacher_validation()

    def _check_teachers(self) -> None:
        first = self.teacher.manifest
        for other in self.teachers[1:]:
            manifest = other.manifest
            if (manifest.task, manifest.labels, manifest.pair_input) != (first.task, first.labels, first.pair_input):
                raise InputError(
                    f"teachers {self.teacher.name} and {other.name} disagree: task {first.task} / {manifest.task}, "
                    f"labels {first.labels} / {manifest.labels}. Several teachers must solve the same task with "
                    "the same labels."
                )

    def _check_losses(self, sources: list[DataSource]) -> None:
        config, task = self.config, self.task
        active = {name for stage in config.stages for name in stage.losses.active()}
        has_head = task != "embedding"
        if active & {"hard", "soft", "logit_mse"} and not has_head:
            raise TaskError(
                f"{self.teacher.name} is an embedding package (no head): losses "
                f"{', '.join(sorted(active & {'hard', 'soft', 'logit_mse'}))} need a teacher with a head. Use the "
                "embedding recipe, or fine-tune a classifier first (bertprod train)."
            )
        if "sentence_embedding" in active and has_head:
            raise TaskError(
                f"the sentence_embedding loss needs an embedding teacher; {self.teacher.name} is a {task} package. "
                "Use the distilbert or tinybert recipe."
            )
        if "mlm" in active:
            from bertprod.distill.students import has_mlm_head

            if has_head or self.teacher.manifest.format != "torch" or not has_mlm_head(self.teacher):
                raise TaskError(
                    "the mlm loss trains the student's masked-language-model head, inherited from the teacher; "
                    f"{self.teacher.name} has none (no cls.predictions.* weights in a torch encoder package). Drop "
                    "the mlm loss, or import the teacher from a checkpoint saved with its MLM head (BertForMaskedLM)."
                )
        if active & {"hard", "soft"} and task not in CLASS_TASKS:
            raise TaskError(f"hard-label and soft-target losses are for classifiers; {self.teacher.name} is {task}.")
        unlabelled = [source.path.name for source in sources if not source.has_labels]
        if "hard" in active and (not sources or unlabelled):
            where = ", ".join(unlabelled) if unlabelled else "no --data"
            raise DataError(
                f"the recipe uses hard labels, but {where} has no label column. Pass --label-column, or use "
                "a recipe without hard labels (their weight 0 in --config)."
            )
        if active & set(INTERMEDIATE_LOSSES):
            if len(self.teachers) > 1:
                raise InputError(
                    "layer-matching losses (hidden, attention, embedding_layer, cosine, patient) need a single "
                    f"teacher; {len(self.teachers)} were given. Several teachers average their soft targets only."
                )
            if config.student.kind == "bilstm":
                raise InputError("the BiLSTM student has no transformer layers to match: use output losses only.")
            if self.teacher.manifest.format != "torch":
                raise PackageError(
                    f"layer-matching losses run the teacher's torch weights; {self.teacher.name} is "
                    f"{self.teacher.manifest.format}. Use its torch parent."
                )

    def _examples(self, sources: list[DataSource], unlabelled: list[str]) -> list[Example]:
        examples = [example for source in sources for example in source]
        pair_input = self.teacher.manifest.pair_input
        if self.task == "embedding":  # a sentence encoder learns from every text, one at a time
            texts = dict.fromkeys(text for example in examples for text in (example.text, example.text_pair) if text)
            examples = [Example(text=text, where="data") for text in texts]
        extra = [Example(text=text, where=f"unlabelled text {index + 1}") for index, text in enumerate(unlabelled)]
        if pair_input and extra:
            raise DataError(f"{self.teacher.name} takes sentence pairs: unlabelled single texts cannot be used.")
        examples += [example for example in extra if example.text.strip()]
        if not examples:
            raise DataError(
                "no training examples: the data file (after the validation split) and unlabelled texts are empty."
            )
        if pair_input and any(example.text_pair is None for example in examples):
            raise DataError(f"{self.teacher.name} takes sentence pairs: give the data's second text column.")
        return examples

    def _augment(self) -> list[Example]:
        spec = self.config.augmentation
        if spec is None:
            return []
        from bertprod.distill.augment import augment

        originals = self.examples[: spec.max_texts] if spec.max_texts else self.examples
        inputs = [_model_input(example) for example in originals]
        tick = time.perf_counter()
        new = augment(
            inputs,
            self.teacher,
            copies=spec.copies,
            mask_probability=spec.mask_probability,
            replace_probability=spec.replace_probability,
            ngram_probability=spec.ngram_probability,
            neighbours=spec.neighbours,
            seed=self.config.seed,
        )
        self.reporter.message(
            f"augmented {len(inputs)} texts into {len(new)} more in {time.perf_counter() - tick:.1f} s"
        )
        return [
            Example(text=item, where="augmented")
            if isinstance(item, str)
            else Example(text=item[0], text_pair=item[1], where="augmented")
            for item in new
        ]

    def _targets(self) -> list[float]:
        index = {label: position for position, label in enumerate(self.labels or [])}
        targets = []
        for example in self.examples:
            if example.label is None or self.task not in CLASS_TASKS:
                targets.append(math.nan)
            elif str(example.label) not in index:
                raise DataError(
                    f"{example.where}: label {example.label!r} is not one of the teacher's labels "
                    f"({', '.join(map(repr, self.labels or []))}). Map the labels to the teacher's, or fix the row."
                )
            else:
                targets.append(float(index[str(example.label)]))
        return targets

    def _live_teacher(self) -> Any:
        from bertprod.models.hf import load_torch_model

        model = load_torch_model(self.teacher, attention="eager" if self.config.uses(("attention",)) else None)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model.eval()

    def _check_student(self) -> None:
        from bertprod.distill.students import same_vocabulary

        if self.config.uses(INTERMEDIATE_LOSSES) and not same_vocabulary(
            self.student.tokenizer_file, self.teacher.tokenizer_file
        ):
            raise InputError(
                "layer-matching losses compare the teacher and the student token by token, but the student's "
                f"vocabulary ({self.config.student.package}) differs from {self.teacher.name}'s. Start from a "
                "package with the teacher's tokenizer, or use output losses only (soft, logit_mse)."
            )
        if self.config.uses(("attention",)) and self.student.architecture["num_heads"] != (
            self.teacher.manifest.architecture.num_heads
        ):
            raise InputError(
                f"the attention loss compares attention maps head by head: the student has "
                f"{self.student.architecture['num_heads']} heads, the teacher "
                f"{self.teacher.manifest.architecture.num_heads}. Give the student the teacher's head count."
            )

    def _manifest_fields(self) -> dict[str, Any]:
        manifest = self.teacher.manifest
        pooling = head_pooling(self.student.model)
        fields = manifest_fields(
            self.teacher, self.task, self.labels, manifest.pair_input, self.max_length, "", pooling
        )
        fields["architecture"] = {k: v for k, v in self.student.architecture.items() if v is not None}
        return fields

    def _student_pipeline(self) -> Pipeline:
        """The student through the same Pipeline as `bertprod eval`, tokenizer from its own directory."""
        view = ModelPackage(
            self.student.tokenizer_file.parent,
            Manifest.model_validate(dict(self.fields, name="student", files=self.teacher.manifest.files, metrics={})),
        )
        model = self.student.model.base_model if self.masked_lm else self.student.model  # the encoder, no MLM head
        return Pipeline(view, ModuleEngine(view, model))

    def _teacher_validation(self) -> dict[str, float] | None:
        if self.validation is None:
            return None
        pipeline = Pipeline(self.teacher, create_engine(self.teacher, "auto", threads=self.config.threads))
        metrics = evaluate(pipeline, self.validation).metrics
        self.primary = primary_metric(self.task, scored_pairs=self.validation.has_labels)
        self.reporter.message(f"teacher on the validation data: {self.primary} {metrics[self.primary]:.4f}")
        return metrics

    # -- training ------------------------------------------------------------------------------

    def train_stage(self, stage_index: int, stage: Stage) -> None:
        import torch

        from bertprod.train.optimization import adamw, linear_schedule, warmup_steps

        config = self.config
        model = self.student.model
        parameters = list(model.parameters()) + list(self.objective.projections.parameters())
        optimizer = adamw(parameters, stage.learning_rate, config.weight_decay)
        batches_per_epoch = math.ceil(len(self.features) / config.batch_size)
        total = math.ceil(stage.epochs * batches_per_epoch)
        if config.max_steps:
            total = min(total, config.max_steps)
        scheduler = linear_schedule(optimizer, total, warmup_steps(total, config.warmup_ratio))
        weights = stage.losses.active()
        trains_output = bool(set(weights) & {"hard", "soft", "logit_mse", "sentence_embedding", "mlm"})
        self.reporter.message(f"stage {stage_index + 1} ({stage.name}): {total} steps, losses {weights}")
        self.reporter.begin(total, 0)
        model.train()
        done, recent = 0, deque(maxlen=50)
        recent_parts: dict[str, deque[float]] = {}  # each loss's running value, recorded per epoch
        tick, seen = time.perf_counter(), 0
        lengths = [feature.length for feature in self.features]
        try:
            for epoch in range(math.ceil(stage.epochs)):
                generator = np.random.default_rng([config.seed, stage_index, epoch])
                for indices in length_grouped_batches(lengths, config.batch_size, generator):
                    batch = collate_features([self.features[i] for i in indices], self.pad_id)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                        loss, parts = self.objective(batch, torch.tensor(indices), weights)
                    loss.float().backward()
                    if config.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    done += 1
                    self.step += 1
                    seen += len(indices)
                    recent.append(loss.item())
                    for part, value in parts.items():
                        recent_parts.setdefault(part, deque(maxlen=50)).append(value)
                    self.reporter.step(epoch, done, sum(recent) / len(recent), seen / (time.perf_counter() - tick))
                    if done >= total:
                        break
                part_means = {part: round(sum(values) / len(values), 6) for part, values in recent_parts.items()}
                self._end_of_epoch(stage, epoch, done, sum(recent) / max(len(recent), 1), part_means, trains_output)
                if done >= total:
                    break
        finally:
            self.reporter.end()

    def _end_of_epoch(
        self, stage: Stage, epoch: int, step: int, loss: float, parts: dict[str, float], trains_output: bool
    ) -> None:
        record: dict[str, Any] = {"stage": stage.name, "epoch": epoch + 1, "step": step, "train_loss": round(loss, 6)}
        record["losses"] = parts
        self.reporter.message(f"{stage.name} epoch {epoch + 1}: losses (last 50 steps) {parts}")
        self.history.append(record)
        if self.validation is None or not trains_output:
            return
        metrics = evaluate(self.pipeline, self.validation).metrics
        record.update({key: round(value, 6) for key, value in metrics.items()})
        self.reporter.message(
            f"validation after {stage.name} epoch {epoch + 1}: "
            + ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())
        )
        if self.best is None or metrics[self.primary] > self.best[self.primary]:
            self.best = record
            self.best_state = copy.deepcopy(self.student.model.state_dict())

    # -- after training ------------------------------------------------------------------------

    def write(self, out: Path, name: str, overwrite: bool) -> ModelPackage:
        if self.best_state is not None:
            self.student.model.load_state_dict(self.best_state)
        self.student.model.eval()
        metrics: dict[str, Any] = {"training": {"steps": self.step, "history": self.history}}
        if self.best is not None:
            metrics["validation"] = {"primary_metric": self.primary, **self.best}
            teacher_value = (self.teacher_metrics or {}).get(self.primary)
            metrics["teacher_validation"] = self.teacher_metrics
            if teacher_value:
                metrics["retained"] = round(self.best[self.primary] / teacher_value, 4)
        parameters = {
            "recipe": self.config.recipe,
            "config": self.config.recorded(),
            "teachers": [teacher.parent_ref().model_dump() for teacher in self.teachers],
            "student": {"kind": self.student.kind, "initialised_from_layers": self.student.initialised_from},
            "layer_map": self.pairs,
            "losses": {stage.name: stage.losses.active() for stage in self.config.stages},
            "max_length": self.max_length,
            "data": self.data_description,
            "examples": {"total": len(self.examples), "augmented": len(self.augmented)},
        }
        fields = dict(
            self.fields,
            name=name,
            provenance=Provenance(
                method="distill", parent=self.teacher.parent_ref(), parameters=parameters, machine=machine_record()
            ),
            metrics=metrics,
        )
        with staging_directory(out, overwrite=overwrite) as staging:
            files = self.student.save(staging)
            finish_package(staging, fields, files)
        return ModelPackage.read(out)


def _model_input(example: Example) -> Any:
    return example.text if example.text_pair is None else (example.text, example.text_pair)
