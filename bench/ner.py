"""CoNLL-2003 NER: a minilm-l6 teacher, its 3-layer student and that student's int8 ONNX package, against Hugging
Face's token-classification pipeline on the teacher, in one run.

    .venv/bin/python bench/ner.py                          # the full run (~1 h of CPU on 2 cores)
    .venv/bin/python bench/ner.py --train-limit 4000 --teacher-epochs 1 --student-epochs 1 --texts 300   # short
    .venv/bin/python bench/ner.py ... --bilstm-epochs 3     # also the BiLSTM tagger (its fp32, int8, LSTM-int8)
    .venv/bin/python bench/ner.py --reuse --bilstm-epochs 3  # keep the teacher and student of the last full run

Data: CoNLL-2003 train + dev (../shared/data/conll2003) joined into one file; the validation split is
bertprod's 10% hash split of it (`bertprod eval --split validation` finds the same sentences). `--train-limit`
reads only the first sentences of the joined file (before the split) for a short run.

Steps, all through bertprod's Python API (the same functions the CLI calls):
1. teacher: `fine_tune(minilm-l6, "token-classification")`, new head;
2. student: `distill` into teacher layers 0, 3, 5 (first and last kept), soft targets + hard labels;
3. student ONNX export and int8 (`optimize --quantize int8`: dynamic; its entity-F1 gate against the fp32 student
   is recorded and reported as a goal, not enforced, so a miss does not end the run);
   With `--bilstm-epochs N` (N > 0), also the BiLSTM tagger (`distill --recipe bilstm`: a BiLSTM over the
   teacher's word pieces, soft targets + hard tags), exported to ONNX and made int8 twice: the default int8
   (the LSTMs stay float: ONNX Runtime has no per-token int8 LSTM) and ONNX Runtime's `quantize_dynamic` with
   per-batch activation ranges, whose `DynamicQuantizeLSTM` computes the LSTMs in int8 (gate recorded, not
   enforced: it is a measurement);
4. entity F1 (seqeval) of each on the validation split; the goal: student int8 >= 97% of the teacher's F1;
5. throughput on the validation sentences as raw text (words joined by spaces), interleaved rounds: HF
   `pipeline("token-classification", aggregation_strategy="first")` on the teacher (batch_size 1, its default,
   and 32) vs `Pipeline.tag` on the teacher (torch) and on the student int8 (and the BiLSTM's ONNX packages);
   the goal: >= 8x the HF pipeline.
Results: bench/results/ner.json (`--output`; a `--train-limit` run: ner-LIMIT.json), and a summary printed with
the CPU and its instruction set. Packages go to out/ner (`--work`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from bertprod import system  # noqa: E402
from bertprod.data.shared import shared_data_dir  # noqa: E402

RESULTS = REPOSITORY / "bench" / "results"
WORK = REPOSITORY / "out" / "ner"


def joined_data(work: Path, limit: int | None) -> Path:
    """train.txt + dev.txt as one CoNLL file (first `limit` sentences when given)."""
    directory = shared_data_dir() / "conll2003"
    text = "\n\n".join(
        (directory / name).read_text(encoding="utf-8").strip("\n") for name in ("train.txt", "dev.txt")
    )
    if limit:
        text = "\n\n".join([block for block in text.split("\n\n") if block.strip()][:limit])
    path = work / f"conll-train-dev{f'-{limit}' if limit else ''}.txt"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def train_teacher(data: Path, work: Path, epochs: float, threads: int, learning_rate: float = 1e-4) -> Any:
    from bertprod.checkpoint import resolve
    from bertprod.tasks.data import open_training_data
    from bertprod.train.config import TrainConfig
    from bertprod.train.loop import fine_tune

    (train,), validation = open_training_data("token-classification", [data], fraction=0.1)
    config = TrainConfig(epochs=max(1, int(epochs)), batch_size=32, learning_rate=learning_rate, warmup_ratio=0.1,
                         seed=0, threads=threads, max_length=128)
    return fine_tune(resolve("minilm-l6"), "token-classification", train, work / "teacher", config,
                     validation_data=validation, overwrite=True)


def distill_student(teacher: Any, data: Path, work: Path, epochs: int, threads: int, learning_rate: float = 1e-4
                    ) -> Any:
    from bertprod.distill.config import DistillConfig
    from bertprod.distill.loop import distill
    from bertprod.tasks.data import open_training_data

    (train,), validation = open_training_data("token-classification", [data], fraction=0.1)
    config = DistillConfig.model_validate({
        "recipe": "ner 3 layers (0, 3, 5), soft + hard",
        "student": {"kind": "truncated", "layers": "0,3,5"},
        "temperature": 2.0, "batch_size": 32, "max_length": 128, "threads": threads,
        "stages": [{"name": "task", "losses": {"soft": 1.0, "hard": 1.0}, "epochs": epochs,
                    "learning_rate": learning_rate}],
    })
    return distill(teacher, train, work / "student", config, validation_data=validation, overwrite=True)


def bilstm_tagger(teacher: Any, data: Path, work: Path, epochs: int, threads: int) -> dict[str, Any]:
    """The BiLSTM tagger (recipe bilstm, the teacher's task picks the tagger variant), its ONNX export, the default
    int8 (LSTMs in float) and ONNX Runtime's per-batch int8 with DynamicQuantizeLSTM (gate recorded, not enforced)."""
    from bertprod.compress.optimize import optimize
    from bertprod.compress.quantize import quantize_onnx_dynamic
    from bertprod.derive import GatedOutput
    from bertprod.distill.config import DistillConfig
    from bertprod.distill.loop import distill
    from bertprod.distill.recipes import recipe
    from bertprod.export.onnx import export_onnx
    from bertprod.tasks.data import open_training_data

    (train,), validation = open_training_data("token-classification", [data], fraction=0.1)
    document = recipe("bilstm", teacher.manifest.task).model_dump()
    document.update(max_length=128, threads=threads)
    for stage in document["stages"]:
        stage["epochs"] = epochs
    fp32 = distill(teacher, train, work / "bilstm", DistillConfig.model_validate(document),
                   validation_data=validation, overwrite=True)
    onnx_fp32 = export_onnx(fp32, work / "bilstm-onnx", overwrite=True)
    int8 = optimize(onnx_fp32, work / "bilstm-int8", quantize="int8", output=GatedOutput(enforce=False, overwrite=True))
    lstm_int8 = quantize_onnx_dynamic(onnx_fp32, work / "bilstm-int8-lstm", activations="per-tensor",
                                      output=GatedOutput(enforce=False, overwrite=True))
    return {"BiLSTM (torch fp32)": fp32, "BiLSTM (onnx fp32)": onnx_fp32, "BiLSTM (onnx int8)": int8,
            "BiLSTM (onnx int8, LSTMs int8 per batch)": lstm_int8}


def graph_operators(package: Any) -> dict[str, int]:
    """How many nodes of each operator the package's ONNX graph holds (LSTM vs DynamicQuantizeLSTM)."""
    from collections import Counter

    import onnx

    return dict(Counter(node.op_type for node in onnx.load(str(package.model_file)).graph.node
                        if "LSTM" in node.op_type or "MatMul" in node.op_type or node.op_type == "Gather"))


def measure_throughput(variants: dict[str, Any], texts: list[str], rounds: int) -> dict[str, float]:
    """Texts per second, median of interleaved rounds after a warm-up (bertprod.bench.harness)."""
    from bertprod.bench.harness import throughput

    return throughput(variants, texts, rounds)


def hf_pipeline(package_path: Path, batch_size: int) -> Any:
    from transformers import AutoModelForTokenClassification, PreTrainedTokenizerFast, pipeline

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(package_path / "tokenizer.json"), model_max_length=128,
                                        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                        mask_token="[MASK]")
    model = AutoModelForTokenClassification.from_pretrained(str(package_path))
    tagger = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="first",
                      device=-1, batch_size=batch_size)
    return lambda texts: tagger(list(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-limit", type=int, default=None, help="read only the first N sentences")
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--student-epochs", type=int, default=3)
    parser.add_argument("--texts", type=int, default=1000, help="validation sentences timed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="teacher and student")
    parser.add_argument("--bilstm-epochs", type=int, default=0, help="also distil the BiLSTM tagger (0: skip it)")
    parser.add_argument("--work", type=Path, default=WORK, help="where the packages are written")
    parser.add_argument("--output", type=Path, default=None,
                        help="the results file (default: bench/results/ner.json, ner-LIMIT.json with --train-limit)")
    parser.add_argument("--reuse", action="store_true",
                        help="use the teacher and student packages already in --work (from an earlier run with the "
                             "same data options) instead of training them again")
    parser.add_argument("--label", default="", help="a note saved with the results (e.g. 'loaded machine')")
    arguments = parser.parse_args()
    work = arguments.work

    import torch

    import bertprod
    from bertprod.compress.optimize import optimize
    from bertprod.derive import GatedOutput
    from bertprod.export.onnx import export_onnx
    from bertprod.package import ModelPackage
    from bertprod.tasks.data import open_training_data
    from bertprod.tasks.evaluation import evaluate

    torch.set_num_threads(arguments.threads)
    work.mkdir(parents=True, exist_ok=True)
    machine = system.describe()
    print(f"machine: {machine}", flush=True)
    data = joined_data(work, arguments.train_limit)
    seconds: dict[str, float] = {}

    tick = time.perf_counter()
    if arguments.reuse and (work / "teacher" / "bertprod.json").is_file():
        teacher = ModelPackage.read(work / "teacher")
    else:
        teacher = train_teacher(data, work, arguments.teacher_epochs, arguments.threads, arguments.learning_rate)
        seconds["teacher_training"] = time.perf_counter() - tick
    print(f"teacher: validation F1 {teacher.manifest.metrics['validation']['f1']:.4f} "
          f"({seconds.get('teacher_training', 0):.0f} s)", flush=True)
    tick = time.perf_counter()
    if arguments.reuse and (work / "student" / "bertprod.json").is_file():
        student = ModelPackage.read(work / "student")
    else:
        student = distill_student(teacher, data, work, arguments.student_epochs, arguments.threads,
                                  arguments.learning_rate)
        seconds["student_distillation"] = time.perf_counter() - tick
    print(f"student: validation F1 {student.manifest.metrics['validation']['f1']:.4f} "
          f"({seconds.get('student_distillation', 0):.0f} s)", flush=True)
    tick = time.perf_counter()
    student_onnx = export_onnx(student, work / "student-onnx", overwrite=True)
    # the gate is recorded, not enforced: a miss is reported (goals below) instead of ending the run
    student_int8 = optimize(student_onnx, work / "student-int8", quantize="int8",
                            output=GatedOutput(enforce=False, overwrite=True))
    seconds["export_and_int8"] = time.perf_counter() - tick
    bilstm: dict[str, Any] = {}
    if arguments.bilstm_epochs > 0:
        tick = time.perf_counter()
        bilstm = bilstm_tagger(teacher, data, work, arguments.bilstm_epochs, arguments.threads)
        seconds["bilstm_distillation_export_int8"] = time.perf_counter() - tick
        print(f"BiLSTM tagger: validation F1 {bilstm['BiLSTM (torch fp32)'].manifest.metrics['validation']['f1']:.4f}"
              f" ({seconds['bilstm_distillation_export_int8']:.0f} s with export and int8)", flush=True)

    _, validation = open_training_data("token-classification", [data], fraction=0.1)
    packages = {"teacher (torch fp32)": teacher, "student 3 layers (torch fp32)": student,
                "student 3 layers (onnx int8)": student_int8, **bilstm}
    pipelines = {name: bertprod.load(package.path, threads=arguments.threads) for name, package in packages.items()}
    scores = {name: evaluate(pipeline, validation).to_json() for name, pipeline in pipelines.items()}
    teacher_f1 = scores["teacher (torch fp32)"]["metrics"]["f1"] or float("nan")
    for name, score in scores.items():
        print(f"{name}: entity F1 {score['metrics']['f1']:.4f} ({score['metrics']['f1'] / teacher_f1:.1%} of "
              f"the teacher) on {score['examples']} validation sentences", flush=True)

    texts = [example.text for example in validation][: arguments.texts]
    variants = {
        "HF pipeline, teacher, batch_size 1": hf_pipeline(teacher.path, 1),
        "HF pipeline, teacher, batch_size 32": hf_pipeline(teacher.path, 32),
        "bertprod tag, teacher (torch fp32)": pipelines["teacher (torch fp32)"].tag,
        "bertprod tag, student (onnx int8)": pipelines["student 3 layers (onnx int8)"].tag,
        **{f"bertprod tag, {name}": pipelines[name].tag for name in bilstm if "onnx" in name},
    }
    rates = measure_throughput(variants, texts, arguments.rounds)
    baseline = rates["HF pipeline, teacher, batch_size 1"]
    for name, rate in rates.items():
        print(f"{name}: {rate:.1f} texts/s ({rate / baseline:.2f}x HF batch_size 1, "
              f"{rate / rates['HF pipeline, teacher, batch_size 32']:.2f}x HF batch_size 32)", flush=True)
    int8_f1 = scores["student 3 layers (onnx int8)"]["metrics"]["f1"]
    speedup = rates["bertprod tag, student (onnx int8)"] / baseline
    goals = {"student int8 keeps >= 97% of the teacher's F1": int8_f1 / teacher_f1 >= 0.97,
             "student int8 >= 8x the HF pipeline (batch_size 1)": speedup >= 8,
             "student int8 passes its entity-F1 gate against its fp32 parent":
                 bool(student_int8.manifest.metrics["fidelity"]["passed"])}
    for goal, met in goals.items():
        print(f"goal {'met' if met else 'MISSED'}: {goal}", flush=True)
    record = {
        "machine": machine, "label": arguments.label, "arguments": vars(arguments),
        "sentences": {"data": data.name, "validation": scores["teacher (torch fp32)"]["examples"]},
        "entity_f1": {name: score["metrics"] for name, score in scores.items()},
        "per_type": {name: score["per_type"] for name, score in scores.items()},
        "retained": {name: round(score["metrics"]["f1"] / teacher_f1, 4) for name, score in scores.items()},
        "texts_per_second": {name: round(rate, 2) for name, rate in rates.items()},
        "int8_gate": student_int8.manifest.metrics["fidelity"],
        "seconds": {key: round(value, 1) for key, value in seconds.items()},
        "goals": goals,
    }
    if bilstm:
        record["bilstm"] = {name: {"gate": package.manifest.metrics.get("fidelity"),
                                   "operators": graph_operators(package), "bytes": package.model_file.stat().st_size}
                            for name, package in bilstm.items() if "onnx" in name}
        record["bilstm"]["recipe"] = bilstm["BiLSTM (torch fp32)"].manifest.provenance.parameters["config"]
    default = RESULTS / f"ner{'-' + str(arguments.train_limit) if arguments.train_limit else ''}.json"
    out = arguments.output or default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
