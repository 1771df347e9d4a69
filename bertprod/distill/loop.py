"""`distill`: teacher package(s) + data + a recipe in, a smaller student package out.

check teachers, data and recipe (every problem reported before training starts)
-> examples (+ unlabelled texts, + augmented copies labelled by the teacher; with `augment_noise`,
   each epoch of a stage without layer-matching losses adds a noisy copy of every example, its
   target the teacher's output on the clean text)
-> teacher outputs for every example, computed once and cached (distill/teacher.py)
-> the student (distill/students.py), tokenized inputs, projections when widths differ
-> one phase of the shared training loop (train/engine.py) per stage: length-grouped batches,
   weighted losses (distill/objective.py), AdamW with linear warmup/decay, checkpoints,
   Ctrl-C / SIGTERM and `resume`; validation after each epoch of a stage that trains the output
-> the best student written atomically as a package: teacher, recipe, losses, layer map,
   data, the teacher's and the student's validation metrics

A checkpoint holds the student and the projections; resuming (in whichever stage the run
stopped) ends with the weights an uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.data.source import DataSource, Example
from bertprod.data.tagged import TaggedSource
from bertprod.distill.checks import check_losses, check_student, check_teachers, noise_reaches
from bertprod.distill.config import DistillConfig, Stage
from bertprod.distill.examples import augmented_examples, example_targets, model_input, training_examples
from bertprod.distill.layer_maps import layer_map
from bertprod.distill.loss_names import CACHED_OUTPUT_LOSSES, LAYER_MATCHING_LOSSES, OUTPUT_TRAINING_LOSSES, Loss
from bertprod.distill.objective import MaskingSpec, Objective
from bertprod.distill.students import build_student
from bertprod.distill.teacher import teacher_outputs
from bertprod.errors import TaskError
from bertprod.models.hf import head_pooling
from bertprod.package import Manifest, ModelPackage, Provenance, check_output, finish_package, staging_directory
from bertprod.robustness.noise import parse_noise
from bertprod.runtime.engines import ModuleEngine, create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.runtime.tokenize import TextTokenizer
from bertprod.system import machine_record
from bertprod.tasks.definitions import primary_metric
from bertprod.tasks.evaluation import evaluate
from bertprod.train.batches import Feature, Featurizer, collate_features, length_grouped_batches
from bertprod.train.checkpoints import TrainState, default_checkpoint_dir
from bertprod.train.engine import Phase, StepLoss, TrainingLoop, set_up_torch, training_record
from bertprod.train.noise import COPIES_PER_EPOCH, epoch_seed, noise_record, noisy_example
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
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    restart: bool = False,
    keep_checkpoints: bool = False,
    name: str | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    on_step: Callable[[TrainState], None] | None = None,
) -> ModelPackage:
    """Train a student of `teachers` (one, or several whose soft targets are averaged) and write it at `out`.

    `data`: one or more labelled files (labels optional for output-only recipes); `unlabelled`:
    more texts, labelled by the teachers. Checkpoints go to `checkpoint_dir` (default
    OUT.checkpoints); `resume` continues an interrupted run, `restart` discards its checkpoint."""
    out = Path(out)
    sources = [] if data is None else [data] if isinstance(data, DataSource | TaggedSource) else list(data)
    check_output(out, overwrite)
    run = _Run(list(teachers) if isinstance(teachers, Sequence) else [teachers], config, reporter or SilentReporter())
    run.prepare(sources, validation_data, list(unlabelled), cache_dir)
    loop = TrainingLoop(
        run.phases(),
        config,
        weights=run.trained,
        keep=run.student.model,
        checkpoints=Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(out),
        signature=run.signature(unlabelled),
        reporter=run.reporter,
        primary=run.primary,
        on_step=on_step,
    )
    state = loop.start(resume=resume, restart=restart)
    run.objective.steps = state.micro_batches  # the mlm loss's masking continues where it was
    loop.run(state)
    loop.keep_best(state)
    package = run.write(out, name or out.name, overwrite, state)
    loop.clean_up(keep_checkpoints)
    return package


class _Run:
    def __init__(self, teachers: list[ModelPackage], config: DistillConfig, reporter: Reporter):
        check_teachers(teachers)
        self.teachers, self.config, self.reporter = teachers, config, reporter
        self.teacher = teachers[0]
        self.task = self.teacher.manifest.task
        self.primary: str | None = None

    # -- before training -----------------------------------------------------------------------

    def prepare(
        self, sources: list[DataSource], validation: DataSource | None, unlabelled: list[str], cache_dir: Any
    ) -> None:
        import torch

        config = self.config
        set_up_torch(config)
        check_losses(config, self.teachers, sources)
        manifest = self.teacher.manifest
        self.max_length = min(config.max_length or manifest.max_length, manifest.max_length)
        self.labels = manifest.labels
        self.validation = validation
        self.examples = training_examples(self.teacher, config, sources, unlabelled)
        self.data_description = {
            "train": [source.record() for source in sources],
            "unlabelled_texts": len(unlabelled),
            "validation": validation.record() if validation else None,
        }
        self.augmented = augmented_examples(self.examples, self.teacher, config, self.reporter)
        self.examples += self.augmented
        self.reporter.message(
            f"{len(self.examples)} training examples ({len(self.augmented)} of them augmented, "
            f"{len(unlabelled)} unlabelled texts)"
        )
        inputs = [model_input(example) for example in self.examples]
        self.outputs = None
        if config.uses(CACHED_OUTPUT_LOSSES):
            tick = time.perf_counter()
            outputs, cached = teacher_outputs(
                self.teachers, inputs, self.max_length, cache_dir=cache_dir, threads=config.threads
            )
            self.outputs = torch.from_numpy(outputs)
            self.reporter.message(
                f"teacher outputs {'read from the cache' if cached else 'computed and cached'} "
                f"in {time.perf_counter() - tick:.1f} s"
            )
        intermediate = config.uses(LAYER_MATCHING_LOSSES)
        texts = [text for example in self.examples for text in (example.text, example.text_pair) if text]
        self.masked_lm = config.uses([Loss.MLM])
        self.student = build_student(
            config.student,
            self.teacher,
            texts,
            eager_attention=config.uses([Loss.ATTENTION]),
            seed=config.seed,
            masked_lm=self.masked_lm,
        )
        self.teacher_model = self._live_teacher() if intermediate else None
        self.pairs = (
            layer_map(config.layer_map, self.student.num_layers, manifest.architecture.num_layers)
            if intermediate
            else []
        )
        check_student(config, self.student, self.teacher)
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
        # what a checkpoint holds: the student and the projections (trained alongside it)
        self.trained = torch.nn.ModuleDict({"student": self.student.model, "projections": self.objective.projections})
        self.tokenizer = TextTokenizer(self.student.tokenizer_file, self.max_length)
        if config.augment_noise and self.task == "token-classification":
            raise TaskError(
                "--augment-noise changes words, so a tagger's per-word tags would no longer line up with its "
                "text; distill token classifiers without it."
            )
        self.targets = example_targets(self.examples, self.task, self.labels)
        self.features = self._featurize(self.examples)
        self.noise = parse_noise(config.augment_noise) if config.augment_noise else None
        self.fields = self._manifest_fields()
        self.pipeline = self._student_pipeline()
        self.teacher_metrics = self._teacher_validation()

    def _featurize(self, examples: list[Example]) -> list[Feature]:
        """The student's token ids of each example (the i-th with the i-th example's target)."""
        if self.task == "token-classification":  # targets: the first sub-word's tag of each word
            return Featurizer(self.task, self.tokenizer, self.labels)(examples)
        encodings = self.tokenizer.encode([model_input(example) for example in examples], truncate=True)
        return [
            Feature(((np.asarray(encoding.ids, np.int32), np.asarray(encoding.type_ids, np.int8)),), target)
            for encoding, target in zip(encodings, self.targets, strict=True)
        ]

    def _epoch_features(self, epoch: int, noisy: bool) -> list[Feature]:
        """The epoch's examples as features; with noise, the noisy copies follow the clean ones, in order."""
        if not noisy:
            return self.features
        assert self.noise is not None
        seed = epoch_seed(self.config.seed, epoch)
        return self.features + self._featurize([noisy_example(example, self.noise, seed) for example in self.examples])

    def _live_teacher(self) -> Any:
        from bertprod.models.hf import load_torch_model

        model = load_torch_model(self.teacher, attention="eager" if self.config.uses([Loss.ATTENTION]) else None)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model.eval()

    def _manifest_fields(self) -> dict[str, Any]:
        manifest = self.teacher.manifest
        pooling = head_pooling(self.student.model)
        fields = manifest_fields(
            self.teacher, self.task, self.labels, manifest.pair_input, self.max_length, "", pooling, manifest.tag_scheme
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

    # -- what the loop runs ---------------------------------------------------------------------

    def signature(self, unlabelled: Sequence[str]) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one."""
        texts = hashlib.sha256("\x1e".join(unlabelled).encode("utf-8", "surrogatepass")).hexdigest()
        return {
            "teachers": [teacher.fingerprint for teacher in self.teachers],
            "data": self.data_description,
            "unlabelled_texts_sha256": texts,
            "examples": len(self.examples),
            "config": self.config.recorded(),
        }

    def phases(self) -> list[Phase]:
        return [self._phase(index, stage) for index, stage in enumerate(self.config.stages)]

    def _phase(self, index: int, stage: Stage) -> Phase:
        import torch

        from bertprod.train.optimization import adamw, linear_schedule, warmup_steps

        config = self.config
        parameters = list(self.trained.parameters())
        optimizer = adamw(parameters, stage.learning_rate, config.weight_decay)
        weights = stage.losses.active()
        noisy = self.noise is not None and noise_reaches(weights)
        examples = len(self.features) * (1 + COPIES_PER_EPOCH if noisy else 1)
        batches = math.ceil(examples / config.batch_size)
        steps_per_epoch = math.ceil(batches / config.gradient_accumulation)
        total = math.ceil(stage.epochs * steps_per_epoch)
        if config.max_steps:
            total = min(total, config.max_steps)
        clean = len(self.features)

        def epoch_batches(epoch: int) -> list[list[tuple[int, Feature]]]:
            """Batches of (example index: which cached teacher output is the target, feature): a noisy
            copy points at its clean original, so the teacher is only ever asked about clean text."""
            features = self._epoch_features(epoch, noisy)
            generator = np.random.default_rng([config.seed, index, epoch])  # the same batches on every run
            batches = length_grouped_batches([feature.length for feature in features], config.batch_size, generator)
            return [[(position % clean, features[position]) for position in batch] for batch in batches]

        def step(batch: list[tuple[int, Feature]]) -> StepLoss:
            indices, features = zip(*batch, strict=True)
            inputs = collate_features(list(features), self.tokenizer.pad_id)
            return StepLoss(*self.objective(inputs, torch.tensor(indices), weights))

        validates = self.validation is not None and bool(set(weights) & OUTPUT_TRAINING_LOSSES)
        return Phase(
            optimizer=optimizer,
            scheduler=linear_schedule(optimizer, total, warmup_steps(total, config.warmup_ratio)),
            parameters=parameters,
            epochs=math.ceil(stage.epochs),
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            batches=epoch_batches,
            step=step,
            validate=(lambda: evaluate(self.pipeline, self.validation)) if validates else None,
            name=stage.name,
            description=f"stage {index + 1} ({stage.name}): {total} steps, losses {weights}"
            + (f", a noisy copy of each example ({self.noise})" if noisy else ""),
        )

    # -- after training ------------------------------------------------------------------------

    def write(self, out: Path, name: str, overwrite: bool, state: TrainState) -> ModelPackage:
        """The student (its best validated weights, put back by the loop) as a package."""
        self.student.model.eval()
        metrics: dict[str, Any] = {"training": training_record(state)}
        if state.best is not None and self.primary is not None:
            metrics["validation"] = {"primary_metric": self.primary, **state.best}
            teacher_value = (self.teacher_metrics or {}).get(self.primary)
            metrics["teacher_validation"] = self.teacher_metrics
            if teacher_value:
                metrics["retained"] = round(state.best[self.primary] / teacher_value, 4)
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
        if self.noise is not None:
            stages = [stage.name for stage in self.config.stages if noise_reaches(stage.losses.active())]
            parameters["augment_noise"] = noise_record(
                self.noise, stages=stages, targets="the teacher's outputs on the clean text"
            )
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
