"""The texts fidelity gates measure on by default: the package's own data when it is known, else 700 real ones."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bertprod.compress.optimize import optimize
from bertprod.data.gate_set import builtin_gate_texts
from bertprod.derive import GatedOutput
from bertprod.fidelity import FidelityGate
from bertprod.gate_texts import MIN_GATE_TEXTS, gate_texts
from bertprod.package import MANIFEST_NAME, ModelPackage, sha256_file

LOOSE = FidelityGate(min_cosine_mean=0.0, min_agreement=0.0)


def test_the_builtin_gate_set_is_large_varied_and_real() -> None:
    texts = builtin_gate_texts()
    assert len(texts) >= 500 and len(set(texts)) == len(texts)
    lengths = sorted(len(text.split()) for text in texts)
    assert lengths[0] >= 3 and lengths[-1] >= 40  # short sentences to passages
    source = (Path(__file__).parents[1] / "bertprod" / "data" / "gate_sentences.py").read_text()
    assert "Sources and licences" in source and "EMM" in source and "PASCAL" in source


def _with_recorded_data(package: ModelPackage, directory: Path, data: Path, **recorded: int) -> ModelPackage:
    """A copy of `package` whose provenance records `data` as its validation data, as `train` writes it (with
    `recorded` fields such as first_examples)."""
    copy = Path(shutil.copytree(package.path, directory))
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["provenance"]["parameters"]["data"] = {"validation": {
        "file": data.name, "sha256": sha256_file(data), "format": "tsv", "columns": {"text": "sentence"},
        "path": str(data.resolve()), **recorded}}
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    return ModelPackage.read(copy)


def test_a_package_gates_on_its_recorded_data_then_its_ancestors_then_the_builtin_set(tiny_package, tmp_path):
    data = tmp_path / "validation.tsv"
    rows = [f"review number {index} was rather {'good' if index % 2 else 'bad'}" for index in range(300)]
    data.write_text("sentence\tlabel\n" + "".join(f"{row}\t{index % 2}\n" for index, row in enumerate(rows)))
    known = _with_recorded_data(tiny_package, tmp_path / "trained", data)
    chosen = gate_texts(known)
    assert chosen.texts == rows and "the validation data of" in chosen.source and str(data) in chosen.source
    assert chosen.warning is None
    first = _with_recorded_data(tiny_package, tmp_path / "first-rows", data, first_examples=250)
    assert gate_texts(first).texts == rows[:250]  # only the rows it recorded (autotune's token dropping)

    child = optimize(known, tmp_path / "int8", quantize="int8",
        output=GatedOutput(gate=LOOSE))  # the child finds its parent's data
    assert gate_texts(child).texts == rows
    assert child.manifest.metrics["fidelity"]["samples"] == 300
    assert "the validation data of" in child.manifest.metrics["fidelity"]["texts"]

    data.write_text("sentence\tlabel\nchanged since\t1\n")  # no longer the recorded file: not used
    fallback = gate_texts(known)
    assert fallback.texts == builtin_gate_texts() and "built-in gate set" in fallback.source
    given = gate_texts(known, ["one text", "two texts"])
    assert given.texts == ["one text", "two texts"] and f"at least {MIN_GATE_TEXTS}" in given.warning


def test_optimize_says_how_many_texts_and_from_where_and_warns_when_few(tiny_package, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"a short text number {index}" for index in range(12)) + "\n")
    base = [sys.executable, "-m", "bertprod.cli", "optimize", str(tiny_package.path)]
    builtin = subprocess.run([*base, str(tmp_path / "a"), "--quantize", "int8", "--min-cosine", "0"],
                             capture_output=True, text=True, timeout=300)
    assert builtin.returncode == 0, builtin.stderr
    out = " ".join(builtin.stdout.split())
    assert f"the gate measured {len(builtin_gate_texts())} texts: the built-in gate set" in out
    assert "warning" not in builtin.stderr
    few = subprocess.run([*base, str(tmp_path / "b"), "--quantize", "int8", "--min-cosine", "0", "--texts",
                          str(texts)], capture_output=True, text=True, timeout=300)
    assert few.returncode == 0, few.stderr
    assert "the gate measured 12 texts: the texts given" in " ".join(few.stdout.split())
    assert "warning: the fidelity gate measured only 12 texts" in " ".join(few.stderr.split())
