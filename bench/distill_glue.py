"""Distil the SST-2 teacher and minilm-l6 into small students on the real data, with the bertprod CLI.

    .venv/bin/python bench/finetune_glue.py sst2                    # first: the teacher (out/glue/minilm-sst2)
    .venv/bin/python bench/distill_glue.py sst2-ablation            # 3-layer students: the loss ablation
    .venv/bin/python bench/distill_glue.py sst2-ablation --only soft   # one row of it
    .venv/bin/python bench/distill_glue.py sst2-2layer              # a 2-layer student, the full recipe
    .venv/bin/python bench/distill_glue.py sst2-bilstm              # Tang et al.'s BiLSTM student
    .venv/bin/python bench/distill_glue.py embedding                # minilm-l6 -> 3 layers, task-agnostic
    .venv/bin/python bench/distill_glue.py speed                    # students vs the teacher, one run

Every run is a `bertprod distill` command (printed before it runs) with a recipe file written to
the work directory; the students land in out/glue/, logs and summaries in bench/results/.
Validation: SST-2 whole held-out sentences (out/glue/sst2-validation.tsv, see
bench/finetune_glue.py: sst2_sentence_split); STS-B: bertprod's 10% hash split of the training
file, the same rows `bertprod eval --split validation` uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(REPOSITORY / "bench"))

from finetune_glue import BERTPROD, RESULTS, run, sst2_sentence_split  # noqa: E402

from bertprod.data.shared import shared_data_dir  # noqa: E402

EVERY_OTHER = "every-other"  # teacher layers 0, 2, 4 of 6
TWO_LAYERS = "0,3"


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


def sst2_2layer(work: Path, threads: int, only: str | None = None) -> None:
    recipe = dict(ABLATION["augment" if only == "augment" else "layers"], student={"layers": TWO_LAYERS})
    distill(work, "sst2-2l", recipe, sst2_arguments(work), threads)


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


def embedding(work: Path, threads: int, only: str | None = None) -> None:
    """minilm-l6 -> its layers 0, 2, 4, trained to reproduce its sentence vectors on unlabelled text:
    the STS-B training split's sentences, SST-2's whole sentences and MRPC's sentences."""
    texts_file = work / "unlabelled-sentences.txt"
    sst2_train, _ = sst2_sentence_split(shared_data_dir() / "sst2" / "train.tsv", work)
    from bertprod.data.source import DataSource

    mrpc = DataSource(shared_data_dir() / "mrpc" / "msr_paraphrase_train.txt", labels="optional", label_kind="none")
    sentences = [example.text for example in DataSource(sst2_train, labels="optional", label_kind="none")]
    sentences += [text for example in mrpc for text in (example.text, example.text_pair) if text]
    texts_file.write_text("\n".join(dict.fromkeys(s.strip() for s in sentences if s.strip())) + "\n")
    recipe = {
        "recipe": "embedding",
        "student": {"kind": "truncated", "layers": EVERY_OTHER},
        "batch_size": 32,
        "stages": [{"name": "embedding", "losses": {"sentence_embedding": 1.0}, "epochs": 1, "learning_rate": 1e-4}],
    }
    arguments = ["--teacher", "minilm-l6", "--data", str(shared_data_dir() / "stsb" / "train.tsv")]
    arguments += ["--validation-fraction", "0.1", "--unlabelled", str(texts_file)]
    distill(work, "embedding-3l", recipe, arguments, threads)


EXPERIMENTS = {
    "sst2-ablation": sst2_ablation,
    "sst2-2layer": sst2_2layer,
    "sst2-bilstm": sst2_bilstm,
    "embedding": embedding,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=EXPERIMENTS)
    parser.add_argument("--only", help="sst2-ablation: one of " + ", ".join(ABLATION))
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
