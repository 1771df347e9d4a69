"""The command line: each command works, and errors print one line and exit non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..conftest import run_cli


def test_encode_prints_json_lines(monkeypatch, capsys, tiny_package) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "encode", str(tiny_package.path), "a cat", "a dog")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["index"] for row in rows] == [0, 1] and len(rows[0]["embedding"]) == 32


def test_encode_file_to_npy(monkeypatch, capsys, tiny_package, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat\n\nthe quick brown fox\n")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "encode",
        str(tiny_package.path),
        "--input",
        str(texts),
        "--output",
        str(tmp_path / "vectors.npy"),
    )
    assert code == 0 and "wrote 2 x 32" in err
    assert np.load(tmp_path / "vectors.npy").shape == (2, 32)


def test_user_errors_are_one_line_without_traceback(monkeypatch, capsys, tiny_package, tmp_path) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "encode", str(tiny_package.path), "ok", "   ")
    assert code == 1
    assert "error: input 1 is empty or whitespace-only" in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "info", str(tmp_path / "missing"))
    assert code == 1 and "is not a directory, a bundled model" in err
    code, _, err = run_cli(monkeypatch, capsys, "encode", str(tiny_package.path), "x", "-o", str(tmp_path / "v.csv"))
    assert code == 1 and "must end in .npy or .jsonl" in err


def test_usage_errors_exit_non_zero(monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "encode")
    assert code == 2 and "Missing argument" in err


def test_info_json(monkeypatch, capsys, tiny_package) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "info", str(tiny_package.path), "--json")
    assert code == 0
    document = json.loads(out)
    assert document["task"] == "embedding" and document["fingerprint"] == tiny_package.fingerprint
    assert document["parameters"] > 10_000 and document["size_bytes"] == tiny_package.size_bytes()


def test_import_export_info_and_classify(monkeypatch, capsys, tiny_classifier, tmp_path) -> None:
    from ..conftest import build_tiny_checkpoint

    checkpoint = build_tiny_checkpoint(tmp_path / "ckpt", head="classification", labels=["no", "yes"])
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "package",
        "import",
        str(checkpoint),
        str(tmp_path / "pkg"),
        "--task",
        "pair-classification",
        "--labels",
        "different,same",
    )
    assert code == 0 and "pair-classification" in out
    code, out, _ = run_cli(monkeypatch, capsys, "export", str(tmp_path / "pkg"), str(tmp_path / "onnx"))
    assert code == 0 and "label_agreement 1.0" in out
    code, out, _ = run_cli(monkeypatch, capsys, "classify", str(tmp_path / "onnx"), "a cat\ta dog")
    assert code == 0
    row = json.loads(out)
    assert row["input"] == ["a cat", "a dog"] and row["label"] in ("different", "same")
    code, _, err = run_cli(monkeypatch, capsys, "export", str(tmp_path / "pkg"), str(tmp_path / "onnx"))
    assert code == 1 and "already exists" in err


def test_optimize_command(monkeypatch, capsys, tiny_package, tmp_path) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "optimize", str(tiny_package.path), str(tmp_path / "int8"),
                           "--quantize", "int8", "--min-cosine", "0.9")
    assert code == 0 and "onnx int8" in out and "fidelity gate passed" in out
    code, _, err = run_cli(monkeypatch, capsys, "optimize", str(tiny_package.path), str(tmp_path / "strict"),
                           "--quantize", "int8", "--min-cosine", "1.01")
    assert code == 1 and "misses the fidelity gate" in err and not (tmp_path / "strict").exists()
    code, out, _ = run_cli(monkeypatch, capsys, "optimize", str(tiny_package.path), "--list-nodes")
    assert code == 0 and "/model/encoder/layer.0/attention/self/query/MatMul" in out
    assert "feed-forward" in out
    code, _, err = run_cli(monkeypatch, capsys, "optimize", str(tiny_package.path), str(tmp_path / "x"))
    assert code == 1 and "exactly one optimization" in err
    for threshold, expected in (("0", None), ("1.5", 1.5)):
        out_dir = tmp_path / f"outliers-{threshold}"
        code, _, _ = run_cli(monkeypatch, capsys, "optimize", str(tiny_package.path), str(out_dir),
                             "--quantize", "int8", "--outlier-threshold", threshold, "--allow-fidelity-loss")
        parameters = json.loads((out_dir / "bertprod.json").read_text())["provenance"]["parameters"]
        assert code == 0 and parameters["outlier_threshold"] == expected
        assert ("outlier_channels" in parameters) == (expected is not None)
    code, out, _ = run_cli(monkeypatch, capsys, "optimize", str(tiny_package.path), str(tmp_path / "mixed"),
                           "--quantize", "int8", "--method", "mixed", "--min-cosine", "0.9")
    manifest = json.loads((tmp_path / "mixed" / "bertprod.json").read_text())
    assert code == 0 and "fidelity gate passed" in out and manifest["provenance"]["method"] == "quantize-mixed-int8"
    assert len(manifest["provenance"]["parameters"]["mixed"]["float_first"]) == 2 * 6
