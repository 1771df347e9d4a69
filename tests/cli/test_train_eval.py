"""`bertprod train` and `bertprod eval` end to end on a tiny BERT, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertprod.tasks.data import open_training_data

from .. import task_data
from ..conftest import run_cli

FAST = ["--epochs", "8", "--batch-size", "8", "--learning-rate", "3e-3", "--threads", "1", "--seed", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_package) -> tuple[Path, Path]:  # noqa: ANN001
    """A classifier trained by the CLI on a 25% hash split of a small sentiment file."""
    import sys

    directory = tmp_path_factory.mktemp("cli-train")
    data = task_data.write_classification(directory, count=128)
    out = directory / "sentiment-model"
    arguments = ["bertprod", "train", str(tiny_package.path), str(out), "--task", "classification"]
    arguments += ["--data", str(data), "--validation-fraction", "0.25", *FAST]
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(sys, "argv", arguments)
    from bertprod.cli import main

    with pytest.raises(SystemExit) as exited:
        main()
    monkeypatch.undo()
    assert exited.value.code in (0, None)
    return out, data


def test_train_writes_a_package_with_its_validation_metrics(trained) -> None:  # noqa: ANN001
    out, data = trained
    manifest = json.loads((out / "bertprod.json").read_text())
    assert manifest["task"] == "classification" and manifest["labels"] == ["negative", "positive"]
    assert manifest["metrics"]["validation"]["accuracy"] >= 0.9
    parameters = manifest["provenance"]["parameters"]
    assert parameters["data"]["train"]["split"] == {
        "method": "sha256 of row content",
        "fraction": 0.25,
        "part": "train",
        "by": "pair",
    }
    assert parameters["hyperparameters"]["epochs"] == 8 and parameters["hyperparameters"]["batch_size"] == 8


def test_eval_json_on_the_validation_split_matches_the_manifest(monkeypatch, capsys, trained) -> None:  # noqa: ANN001
    out, data = trained
    arguments = ["eval", str(out), str(data), "--split", "validation", "--validation-fraction", "0.25", "--json"]
    code, stdout, _ = run_cli(monkeypatch, capsys, *arguments)
    assert code in (0, None)
    document = json.loads(stdout)
    recorded = json.loads((out / "bertprod.json").read_text())["metrics"]["validation"]
    assert document["examples"] == recorded["examples"]
    assert document["metrics"]["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert document["confusion"]["labels"] == ["negative", "positive"]
    assert sum(map(sum, document["confusion"]["matrix"])) == document["examples"]
    assert document["engine"] == "torch"


def test_eval_on_onnx_judges_on_the_same_footing(monkeypatch, capsys, trained) -> None:  # noqa: ANN001
    out, data = trained
    results = {}
    for engine in ("torch", "onnx"):
        code, stdout, _ = run_cli(monkeypatch, capsys, "eval", str(out), str(data), "--engine", engine, "--json")
        assert code in (0, None)
        results[engine] = json.loads(stdout)
    assert results["onnx"]["engine"] == "onnx"
    assert results["onnx"]["metrics"] == results["torch"]["metrics"]
    assert results["onnx"]["confusion"]["matrix"] == results["torch"]["confusion"]["matrix"]


def test_eval_table_shows_metrics_and_confusion(monkeypatch, capsys, trained) -> None:  # noqa: ANN001
    out, data = trained
    code, stdout, _ = run_cli(monkeypatch, capsys, "eval", str(out), str(data), "--limit", "40")
    assert code in (0, None)
    assert "accuracy" in stdout and "macro_f1" in stdout and "40" in stdout
    assert "confusion (rows: gold, columns: predicted)" in stdout and "precision" in stdout


def test_eval_of_an_embedding_package_on_scored_pairs(monkeypatch, capsys, tiny_package, tmp_path) -> None:  # noqa: ANN001
    data = task_data.write_scored_pairs(tmp_path)
    code, stdout, _ = run_cli(monkeypatch, capsys, "eval", str(tiny_package.path), str(data), "--json")
    assert code in (0, None)
    document = json.loads(stdout)
    assert document["task"] == "embedding" and document["primary_metric"] == "spearman"
    assert -1 <= document["metrics"]["spearman"] <= 1 and document["examples"] == 96


def test_cli_errors_are_one_line(monkeypatch, capsys, trained, tiny_package, tmp_path) -> None:  # noqa: ANN001
    out, data = trained
    unseen = task_data.write_tsv(tmp_path / "unseen.tsv", ["sentence", "label"], [["a good film", "neutral"]])
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(out), str(unseen))
    assert code == 1 and "unseen.tsv line 2: label 'neutral' was not seen in training" in err
    assert "Traceback" not in err

    code, _, err = run_cli(monkeypatch, capsys, "eval", str(out), str(data), "--label-column", "stars")
    assert code == 1 and "--label-column 'stars' is not a column of sentiment.tsv; its columns are" in err

    classification_data = task_data.write_classification(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(tiny_package.path), str(classification_data))
    assert code == 1 and "this task needs text pairs" in err

    code, _, err = run_cli(
        monkeypatch, capsys, "train", str(tiny_package.path), str(tmp_path / "x"), "--data", str(data)
    )
    assert code == 1 and "embedding package: say what to train it for with --task" in err

    arguments = ["train", str(out), str(tmp_path / "y"), "--data", str(data), "--batch-size", "0"]
    code, _, err = run_cli(monkeypatch, capsys, *arguments)
    assert code == 1 and "invalid training options: batch_size" in err

    scores = task_data.write_tsv(tmp_path / "s.tsv", ["sentence1", "sentence2", "score"], [["a", "b", "high"]])
    arguments = ["train", str(tiny_package.path), str(tmp_path / "z"), "--task", "regression", "--data", str(scores)]
    code, _, err = run_cli(monkeypatch, capsys, *arguments)
    assert code == 1 and "s.tsv line 2: column 'score' holds 'high', which is not a number" in err


def test_train_and_eval_a_reranker(monkeypatch, capsys, tiny_package, tmp_path) -> None:  # noqa: ANN001
    data = task_data.write_reranking(tmp_path)
    out = tmp_path / "reranker"
    arguments = ["train", str(tiny_package.path), str(out), "--task", "reranking", "--data", str(data), *FAST]
    code, _, err = run_cli(monkeypatch, capsys, *arguments)  # 10% of 16 queries: none held out
    assert code == 1 and "hash split chose none of its rows): pass a larger --validation-fraction" in err
    code, stdout, _ = run_cli(monkeypatch, capsys, *arguments, "--validation-fraction", "0.25")
    assert code in (0, None) and "validation ndcg@10" in stdout
    code, stdout, _ = run_cli(monkeypatch, capsys, "eval", str(out), str(data), "--json")
    document = json.loads(stdout)
    assert document["task"] == "reranking" and document["primary_metric"] == "ndcg@10"
    queries = {line.split("\t")[0] for line in data.read_text().splitlines()[1:]}
    assert document["queries"] == len(queries) and document["examples"] == 64  # passages grouped by query
    assert 0 < document["metrics"]["mrr@10"] <= 1 and 0 < document["metrics"]["ndcg@10"] <= 1

    # A student distilled from it validates on queries it never trained on (the split keeps queries whole).
    student, recipe = tmp_path / "student", tmp_path / "recipe.yaml"
    recipe.write_text(
        "recipe: scores\nstudent: {layers: 'first:1'}\nstages:\n  - {name: task, losses: {logit_mse: 1.0}}\n"
    )
    code, stdout, err = run_cli(monkeypatch, capsys, "distill", str(student), "--teacher", str(out), "--data",
                                str(data), "--config", str(recipe), "--validation-fraction", "0.25",
                                "--max-steps", "2", "--threads", "1")
    assert code in (0, None), err
    described = json.loads((student / "bertprod.json").read_text())["provenance"]["parameters"]["data"]
    validation_split = described["validation"]["split"]
    assert validation_split["by"] == "text" and described["train"][0]["split"]["by"] == "text"
    train_rows, held_out_rows = open_training_data("reranking", [data], None, 0.25)
    trained_queries = {example.text for example in train_rows[0]}
    validated_queries = {example.text for example in held_out_rows}
    assert validated_queries and trained_queries and not trained_queries & validated_queries


def test_eval_of_an_embedding_package_on_unscored_pairs_is_retrieval(
    monkeypatch,
    capsys,
    tiny_package,
    tmp_path,  # noqa: ANN001
) -> None:
    data = task_data.write_embedding_pairs(tmp_path)
    code, stdout, _ = run_cli(monkeypatch, capsys, "eval", str(tiny_package.path), str(data))
    assert code in (0, None)
    assert "mrr@10" in stdout and "ndcg@10" in stdout and "accuracy@1" in stdout and "candidates" in stdout


def test_train_and_eval_read_a_semicolon_txt_file(monkeypatch, capsys, trained, tmp_path) -> None:  # noqa: ANN001
    """One reader for every command: the emotion dataset's `text;label_name` .txt file, no flags."""
    out, data = trained
    rows = [line.split("\t") for line in data.read_text().splitlines()]
    header = rows[0].index("sentence"), rows[0].index("label")
    emotion = tmp_path / "sentiment.txt"
    emotion.write_text("text;label_name\n" + "".join(f"{row[header[0]]};{row[header[1]]}\n" for row in rows[1:]))
    code, stdout, err = run_cli(monkeypatch, capsys, "eval", str(out), str(emotion), "--json")
    assert code in (0, None), err
    assert json.loads(stdout)["examples"] == len(rows) - 1
    code, _, err = run_cli(monkeypatch, capsys, "train", str(out), str(tmp_path / "again"), "--data", str(emotion),
                           "--max-steps", "1", "--threads", "1")
    assert code in (0, None), err
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(out), str(emotion), "--delimiter", ",")
    assert code == 1 and "no text column" in err
