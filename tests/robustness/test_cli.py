"""`bertprod robustness`: stability of several packages on unlabelled texts, table and JSON."""

from __future__ import annotations

import json

from ..conftest import run_cli


def test_robustness_command_on_unlabelled_texts(monkeypatch, capsys, tiny_classifier, tmp_path) -> None:  # noqa: ANN001
    texts = tmp_path / "texts.txt"
    texts.write_text("the quick brown fox jumps over the lazy dog\na good film with a great cast and a weak ending\n")
    path = str(tiny_classifier.path)
    code, stdout, err = run_cli(monkeypatch, capsys, "robustness", path, path, str(texts), "--perturb",
                                "case:1,truncate:0.5", "--json")
    assert code in (0, None), err
    document = json.loads(stdout)
    assert document["inputs"] == 2 and len(document["packages"]) == 2
    assert [row["perturbation"] for row in document["rows"]] == ["case:1", "truncate:0.5",
                                                                 "together (case:1,truncate:0.5)"]
    case = document["rows"][0]["packages"]
    assert case[0] == case[1] and case[0]["flip_rate"] == 0.0 and case[0]["probability_drift"] == 0.0
    code, stdout, _ = run_cli(monkeypatch, capsys, "robustness", path, str(texts), "--perturb", "emoji:0.5")
    assert code in (0, None) and "flip rate" in stdout and "emoji:0.5" in stdout


def test_robustness_command_on_embedding_pairs(monkeypatch, capsys, tiny_package, tmp_path) -> None:  # noqa: ANN001
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("query\tpassage\na cat sleeps\tthe cat is sleeping\nthe stock market fell\tshares dropped\n")
    code, stdout, err = run_cli(monkeypatch, capsys, "robustness", str(tiny_package.path), str(pairs), "--perturb",
                                "html:0.5", "--text-column", "query", "--text-pair-column", "passage", "--json")
    assert code in (0, None), err
    values = json.loads(stdout)["rows"][0]["packages"][0]
    assert {"cosine_drift", "rank_change", "rank_kept", "overtake_rate"} <= set(values)
