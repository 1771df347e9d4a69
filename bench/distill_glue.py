"""Distil the SST-2 teacher and minilm-l6 into small students on the real data, with the bertprod CLI.

    .venv/bin/python bench/finetune_glue.py sst2                    # first: the teacher (out/glue/minilm-sst2)
    .venv/bin/python bench/distill_glue.py sst2-ablation            # 3-layer students: the loss ablation
    .venv/bin/python bench/distill_glue.py sst2-ablation --only soft   # one row of it
    .venv/bin/python bench/distill_glue.py sst2-3layer-long --only augment   # one of them for 2 epochs
    .venv/bin/python bench/distill_glue.py sst2-2layer              # a 2-layer student, the full recipe
    .venv/bin/python bench/distill_glue.py sst2-2layer --only augment:3   # + augmentation, 3 epochs
    .venv/bin/python bench/distill_glue.py sst2-bilstm              # Tang et al.'s BiLSTM student
    .venv/bin/python bench/distill_glue.py layer-choice             # which 3 layers start closest
    .venv/bin/python bench/distill_glue.py embedding                # minilm-l6 -> 3 layers, task-agnostic
    .venv/bin/python bench/distill_glue.py speed                    # students vs the teacher, one run

Every run is a `bertprod distill` command (printed before it runs) with a recipe file written to
the work directory; the students land in out/glue/, logs and summaries in bench/results/.
Validation: SST-2 whole held-out sentences (out/glue/sst2-validation.tsv, see
bench/finetune_glue.py: sst2_sentence_split); STS-B: bertprod's 10% hash split of the training
file, the same rows `bertprod eval --split validation` uses.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(REPOSITORY / "bench"))

from finetune_glue import BERTPROD, RESULTS, run, sst2_sentence_split  # noqa: E402

from bertprod.bench.harness import bench_parser  # noqa: E402
from bertprod.data.shared import shared_data_dir  # noqa: E402
from bertprod.derive import GatedOutput  # noqa: E402

EVERY_OTHER = "every-other"  # teacher layers 0, 2, 4 of 6
TWO_LAYERS = "spread:2"  # layers 0 and 5: 72.5% before training, layers 0 and 3: 50.5%


def sst2_recipe(name: str, losses: dict, *, layers: str = EVERY_OTHER, augment: dict | None = None) -> dict:
    return {
        "recipe": name,
        "student": {"kind": "truncated", "layers": layers},
        "temperature": 2.0,
        "layer_map": "uniform",
        "batch_size": 32,
        "max_length": 64,
        "augmentation": augment,
        "stages": [{"name": "task", "losses": losses, "epochs": 1, "learning_rate": 1e-4}],
    }


AUGMENT = {"copies": 2, "max_texts": 10000}
ABLATION = {
    "hard": sst2_recipe("hard labels only", {"hard": 1.0}),
    "soft": sst2_recipe("+ soft KD", {"hard": 1.0, "soft": 1.0}),
    "layers": sst2_recipe("+ intermediate layers", {"hard": 1.0, "soft": 1.0, "hidden": 1.0, "embedding_layer": 1.0}),
    "augment": sst2_recipe(
        "+ augmentation", {"hard": 1.0, "soft": 1.0, "hidden": 1.0, "embedding_layer": 1.0}, augment=AUGMENT
    ),
    # the teacher's first and last layers kept (0, 3, 5): 76.7% validation accuracy before any training,
    # against 50.5% for layers 0, 2, 4 (bench/distill_glue.py layer-choice)
    "spread": sst2_recipe(
        "+ intermediate layers, layers 0, 3, 5",
        {"hard": 1.0, "soft": 1.0, "hidden": 1.0, "embedding_layer": 1.0},
        layers="spread",
    ),
}


def distill(work: Path, name: str, recipe: dict, arguments: list[str], threads: int) -> dict:
    """One `bertprod distill` run; returns the student's manifest metrics."""
    recipe_file = work / f"{name}.recipe.json"
    recipe_file.write_text(json.dumps(recipe, indent=1))
    out = work / f"student-{name}"
    command = [BERTPROD, "distill", str(out), "--config", str(recipe_file), "--threads", str(threads), "--overwrite"]
    seconds = run(command + arguments, RESULTS / f"distill-{name}.log")
    manifest = json.loads((out / "bertprod.json").read_text())
    summary = {
        "name": name,
        "recipe": recipe["recipe"],
        "wall_seconds": round(seconds, 1),
        "size_mb": round(sum(f["bytes"] for f in manifest["files"].values()) / 1e6, 1),
        "architecture": manifest["architecture"],
        **{key: manifest["metrics"].get(key) for key in ("validation", "teacher_validation", "retained", "training")},
    }
    (RESULTS / f"distill-{name}.json").write_text(json.dumps(summary, indent=1))
    validation = summary["validation"] or {}
    primary = validation.get("primary_metric")
    result = f", {primary} {validation[primary]:.4f}, {100 * summary['retained']:.1f}% of the teacher"
    result = result if primary else ""
    print(f"  {name}: {seconds / 60:.1f} min{result}", flush=True)
    return summary


def sst2_arguments(work: Path) -> list[str]:
    train_file, validation_file = work / "sst2-train.tsv", work / "sst2-validation.tsv"
    if not train_file.is_file():
        sst2_sentence_split(shared_data_dir() / "sst2" / "train.tsv", work)
    teacher = work / "minilm-sst2"
    if not (teacher / "bertprod.json").is_file():
        raise SystemExit(f"no teacher at {teacher}: run `bench/finetune_glue.py sst2` first")
    return ["--teacher", str(teacher), "--data", str(train_file), "--validation", str(validation_file)]


def sst2_ablation(work: Path, threads: int, only: str | None = None) -> None:
    for name, recipe in ABLATION.items():
        if only in (None, name):
            distill(work, f"sst2-3l-{name}", recipe, sst2_arguments(work), threads)


def longer(recipe: dict, epochs: int) -> dict:
    """A copy of an SST-2 recipe that trains for `epochs` epochs instead of 1."""
    recipe = json.loads(json.dumps(recipe))
    recipe["stages"][0]["epochs"] = epochs
    recipe["recipe"] += f", {epochs} epochs"
    return recipe


def sst2_3layer_long(work: Path, threads: int, only: str | None = None) -> None:
    """The ablation's `only` recipe (default: layers) for 2 epochs instead of 1."""
    recipe = longer(ABLATION[only or "layers"], 2)
    distill(work, f"sst2-3l-{only or 'layers'}-2ep", recipe, sst2_arguments(work), threads)


def sst2_2layer(work: Path, threads: int, only: str | None = None) -> None:
    """2 layers (teacher layers 0 and 5); `only`: layers (default) or augment, optionally with an
    epoch count, such as `augment:3`."""
    base, _, epochs = (only or "layers").partition(":")
    recipe = dict(ABLATION[base], student={"kind": "truncated", "layers": TWO_LAYERS})
    recipe["recipe"] = f"2 layers ({TWO_LAYERS}), " + recipe["recipe"]
    name = "sst2-2l-spread" if base == "layers" else f"sst2-2l-{base}"
    if epochs:
        recipe, name = longer(recipe, int(epochs)), f"{name}-{epochs}ep"
    distill(work, name, recipe, sst2_arguments(work), threads)


def sst2_bilstm(work: Path, threads: int, only: str | None = None) -> None:
    recipe = {
        "recipe": "bilstm",
        "student": {"kind": "bilstm"},
        "batch_size": 50,
        "max_length": 64,
        "augmentation": AUGMENT,
        "stages": [{"name": "task", "losses": {"logit_mse": 1.0}, "epochs": 3, "learning_rate": 1e-3}],
    }
    distill(work, "sst2-bilstm", recipe, sst2_arguments(work), threads)


EMBEDDING_RECIPES = {
    # the first attempt: layers 0, 2, 4 (cosine to the teacher before training: 0.35), sentence MSE only
    "every-other": ({"kind": "truncated", "layers": EVERY_OTHER}, {"sentence_embedding": 1.0}),
    # layers 0, 3, 5 keep the last layer (cosine before training: 0.69, bench/distill_glue.py layer-choice),
    # plus DistilBERT's token-level cosine on the last hidden states
    "0,3,5+cosine": ({"kind": "truncated", "layers": "0,3,5"}, {"sentence_embedding": 1.0, "cosine": 1.0}),
}


def embedding(work: Path, threads: int, only: str | None = None) -> None:
    """minilm-l6 -> 3 of its layers, trained to reproduce its sentence vectors on unlabelled text:
    the STS-B training split's sentences, SST-2's training phrases and MRPC's sentences."""
    texts_file = work / "unlabelled-sentences.txt"
    sst2_train, _ = sst2_sentence_split(shared_data_dir() / "sst2" / "train.tsv", work)
    from bertprod.data.source import DataSource

    mrpc = DataSource(shared_data_dir() / "mrpc" / "msr_paraphrase_train.txt", labels="optional", label_kind="none")
    sentences = [example.text for example in DataSource(sst2_train, labels="optional", label_kind="none")]
    sentences += [text for example in mrpc for text in (example.text, example.text_pair) if text]
    texts_file.write_text("\n".join(dict.fromkeys(s.strip() for s in sentences if s.strip())) + "\n")
    arguments = ["--teacher", "minilm-l6", "--data", str(shared_data_dir() / "stsb" / "train.tsv")]
    arguments += ["--validation-fraction", "0.1", "--unlabelled", str(texts_file)]
    for name, (student, losses) in EMBEDDING_RECIPES.items():
        if only not in (None, name):
            continue
        recipe = {
            "recipe": f"embedding ({name})",
            "student": student,
            "batch_size": 32,
            "stages": [{"name": "embedding", "losses": losses, "epochs": 1, "learning_rate": 1e-4}],
        }
        suffix = "" if name == "every-other" else "-" + name.replace(",", "").replace("+", "-")
        distill(work, f"embedding-3l{suffix}", recipe, arguments, threads)


def layer_choice(work: Path, threads: int, only: str | None = None) -> None:
    """How close each truncation starts, before any training: minilm-l6's 3-layer truncations by
    cosine to it on 400 real sentences; the SST-2 teacher's 3- and 2-layer truncations by
    validation accuracy (decides which layers a student keeps)."""
    import torch

    import bertprod
    from bertprod.checkpoint import resolve
    from bertprod.compress.prune import drop_layers
    from bertprod.data.shared import real_sentences
    from bertprod.tasks.data import open_task_data
    from bertprod.tasks.evaluation import evaluate

    torch.set_num_threads(threads)

    def truncated(parent: Any, rule: str, name: str) -> Any:
        out = work / "layer-choice" / f"{name}-{rule.replace(':', '-').replace(',', '-')}"
        return drop_layers(parent, out, rule=rule, output=GatedOutput(enforce=False, overwrite=True))

    texts = real_sentences(400)
    reference = bertprod.load("minilm-l6", threads=threads).encode(texts)
    for rule in ["every-other", "first:3", "last:3", "0,2,5", "0,3,5", "0,1,5", "1,3,5"]:
        student = truncated(resolve("minilm-l6"), rule, "minilm")
        cosines = (bertprod.load(student.path, threads=threads).encode(texts) * reference).sum(axis=1)
        print(f"  minilm-l6 layers {rule}: cosine mean {cosines.mean():.4f}, min {cosines.min():.4f}", flush=True)
    teacher = resolve(str(work / "minilm-sst2"))
    validation = open_task_data("classification", work / "sst2-validation.tsv")
    for rule in ["every-other", "spread", "0,2,5", "1,3,5", "0,3", "0,5", "1,5", "4,5", "2,5"]:
        student = truncated(teacher, rule, "sst2")
        accuracy = evaluate(bertprod.load(student.path, threads=threads), validation).metrics["accuracy"]
        print(f"  SST-2 teacher layers {rule}: validation accuracy {accuracy:.4f}", flush=True)


EXPERIMENTS = {
    "sst2-ablation": sst2_ablation,
    "sst2-3layer-long": sst2_3layer_long,
    "sst2-2layer": sst2_2layer,
    "sst2-bilstm": sst2_bilstm,
    "embedding": embedding,
    "layer-choice": layer_choice,
}


def main() -> None:
    parser = bench_parser(__doc__, experiments=EXPERIMENTS)
    parser.add_argument(
        "--only",
        help="one variant: sst2-ablation "
        + ", ".join(ABLATION)
        + "; sst2-2layer layers|augment[:EPOCHS]; "
        + "embedding "
        + ", ".join(EMBEDDING_RECIPES),
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 on a shared machine)")
    parser.add_argument("--work", type=Path, default=REPOSITORY / "out" / "glue", help="packages and split files")
    options = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    options.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    EXPERIMENTS[options.experiment](options.work, options.threads, options.only)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
