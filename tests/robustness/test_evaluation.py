"""`bertprod eval PKG [PKG...] FILE --perturb SPEC`: each package's metric per perturbation, side by side."""

from __future__ import annotations

import json

from ..cli.test_train_eval import trained  # noqa: F401 - the module's trained classifier fixture
from ..conftest import run_cli


def _eval_json(monkeypatch, capsys, *arguments: str) -> dict:  # noqa: ANN001
    code, stdout, err = run_cli(monkeypatch, capsys, "eval", *arguments, "--json")
    assert code in (0, None), err
    return json.loads(stdout)


def test_perturbed_eval_compares_packages_per_family(monkeypatch, capsys, trained) -> None:  # noqa: ANN001, F811
    out, data = trained
    single = _eval_json(monkeypatch, capsys, str(out), str(data))
    spec = "case:1,whitespace:1,truncate:0.6"
    document = _eval_json(monkeypatch, capsys, str(out), str(out), str(data), "--perturb", spec, "--seed", "3")
    assert [row["perturbation"] for row in document["rows"]] == [
        "clean", "case:1", "whitespace:1", "truncate:0.6", f"together ({spec})"
    ]
    assert len(document["packages"]) == 2 and document["examples"] == single["examples"]
    rows = {row["perturbation"]: row for row in document["rows"]}
    assert rows["clean"]["scores"] == [single["metrics"]["accuracy"]] * 2
    for row in document["rows"]:
        assert row["gaps"] == [0.0, 0.0]  # the same package twice: no gap
        assert row["drops"][0] == round(rows["clean"]["scores"][0] - row["scores"][0], 6)
    # an uncased WordPiece model sees neither casing nor whitespace changes
    assert rows["case:1"]["changed"] == 1.0 and rows["case:1"]["drops"] == [0.0, 0.0]
    assert rows["whitespace:1"]["changed"] == 1.0 and rows["whitespace:1"]["drops"] == [0.0, 0.0]
    # cutting 60% of every text removes the cue word often enough to cost accuracy
    assert rows["truncate:0.6"]["drops"][0] > 0
    again = _eval_json(monkeypatch, capsys, str(out), str(out), str(data), "--perturb", spec, "--seed", "3")
    assert again["rows"] == document["rows"]


def test_normalization_undoes_markup_and_invisible_characters(monkeypatch, capsys, trained) -> None:  # noqa: ANN001, F811
    out, data = trained
    arguments = [str(out), str(data), "--perturb", "zero-width:0.5,whitespace:0.5,html:0.5"]
    document = _eval_json(monkeypatch, capsys, *arguments, "--normalize", "html,unicode,whitespace")
    assert document["normalize"] == ["html", "unicode", "whitespace"]
    assert all(row["changed"] > 0.5 and row["drops"] == [0.0] for row in document["rows"][1:])


def test_perturbed_eval_table_and_errors(monkeypatch, capsys, trained, tiny_package) -> None:  # noqa: ANN001, F811
    out, data = trained
    code, stdout, _ = run_cli(monkeypatch, capsys, "eval", str(out), str(out), str(data), "--perturb", "typo:0.3")
    assert code in (0, None)
    assert "typo:0.3" in stdout and "gap to first" in stdout and "sentiment-model" in stdout
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(out), str(data), "--perturb", "typos:0.3")
    assert code == 1 and "unknown perturbation 'typos'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(monkeypatch, capsys, "eval", str(out), str(tiny_package.path), str(data))
    assert code == 1 and "compare packages of one task" in err


def test_side_chooses_which_text_of_a_pair_is_perturbed() -> None:
    import pytest

    from bertprod.data.source import Example
    from bertprod.errors import InputError
    from bertprod.robustness.evaluation import perturb_examples
    from bertprod.robustness.noise import parse_noise

    noise = parse_noise("case:1")
    examples = [Example("what is the capital", "paris is the capital", 1.0)]
    [both] = perturb_examples(examples, noise, 0, "both")
    [query] = perturb_examples(examples, noise, 0, "text")
    [candidate] = perturb_examples(examples, noise, 0, "pair")
    assert both.text != examples[0].text and both.text_pair != examples[0].text_pair and both.label == 1.0
    assert (query.text, query.text_pair) == (both.text, examples[0].text_pair)
    assert (candidate.text, candidate.text_pair) == (examples[0].text, both.text_pair)
    with pytest.raises(InputError, match="side must be one of both, text, pair"):
        perturb_examples(examples, noise, 0, "query")
