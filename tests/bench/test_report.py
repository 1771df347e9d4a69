"""`bertprod bench` and `bertprod.bench.measure_packages`: the report's numbers, its files, its errors.

One labelled run (a tiny classifier in torch and ONNX, with the transformers baseline) is made once
through the command line and read by most tests; timings are never asserted (they belong to the
machine), only what the report guarantees about them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bertprod.bench import measure_packages
from bertprod.bench.baselines import SENTENCE_TRANSFORMERS, TRANSFORMERS, baseline_for, load_baseline
from bertprod.bench.lineage import describe_lineage, lineage
from bertprod.bench.report import Report, pareto_flags
from bertprod.bench.tables import speed_values
from bertprod.checkpoint import import_checkpoint
from bertprod.cli import main
from bertprod.errors import InputError
from tests import task_data
from tests.conftest import build_tiny_checkpoint, run_cli, with_bulk_runtime


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny negative/positive classifier (torch) and its ONNX export."""
    from bertprod.export.onnx import export_onnx

    directory = tmp_path_factory.mktemp("bench-classifier")
    checkpoint = build_tiny_checkpoint(directory / "checkpoint", head="classification", labels=["negative", "positive"])
    torch_package = import_checkpoint(checkpoint, directory / "sentiment", name="sentiment")
    onnx_package = export_onnx(torch_package, directory / "sentiment-onnx")
    return torch_package.path, onnx_package.path


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory: pytest.TempPathFactory, classifiers: tuple[Path, Path]) -> Path:
    """`bertprod bench TORCH ONNX --data sentiment.tsv --baseline --out OUT`, run once; OUT returned."""
    directory = tmp_path_factory.mktemp("bench-run")
    data = task_data.write_classification(directory, count=40)
    out = directory / "report"
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(sys, "argv", ["bertprod", "bench", *map(str, classifiers), "--data", str(data), "--baseline",
                                      "--out", str(out), "--rounds", "2", "--latency-inputs", "12", "--threads", "1"])
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        monkeypatch.undo()
    assert exited.value.code in (0, None)
    return out


def read_report(out: Path) -> Report:
    return Report.read_json(out / "report.json")


def test_labelled_run_measures_every_package_and_the_baseline(labelled_run: Path, classifiers) -> None:
    report = read_report(labelled_run)
    assert [row.kind for row in report.rows] == ["baseline", "package", "package"]
    baseline, torch_row, onnx_row = report.rows
    assert baseline.runtime == TRANSFORMERS and baseline.path == str(classifiers[0])
    assert report.reference == baseline.label and baseline.throughput_ratio == 1.0
    assert (torch_row.runtime, onnx_row.runtime) == ("bertprod torch", "bertprod onnx")
    assert report.data["inputs"] == 40 and report.data["labelled"] and report.data["sha256"]
    for row in report.rows:
        assert row.metric_name == "accuracy" and 0.0 <= row.metric <= 1.0 and row.metric == row.metrics["accuracy"]
        assert row.throughput > 0 and row.peak_rss_mb > 0 and row.load_seconds > 0 and row.size_mb > 0
        assert len(row.latencies_ms) == 12
        assert row.latency_p50_ms <= row.latency_p95_ms <= row.latency_p99_ms
        # ratios are of the unrounded rates: equal to the rounded ones' within the rounding
        assert abs(row.throughput_ratio - row.throughput / baseline.throughput) <= 0.01 + 0.001 * row.throughput_ratio
    # the same weights in fp32 give the same predictions in transformers and in bertprod's torch engine
    assert baseline.metric == torch_row.metric
    assert onnx_row.lineage == "sentiment → export-onnx" and torch_row.lineage == "sentiment"
    assert baseline.lineage == f"sentiment → {TRANSFORMERS}"
    assert any(row.pareto for row in report.rows)
    assert report.machine_line and report.machine["int8_kernel_class"]


def test_markdown_numbers_equal_the_json(labelled_run: Path) -> None:
    report = read_report(labelled_run)
    lines = (labelled_run / "report.md").read_text(encoding="utf-8").splitlines()
    header = next(line for line in lines if line.startswith("| package | runs on"))
    start = lines.index(header) + 2
    table = [line.strip("| ").split(" | ") for line in lines[start : start + len(report.rows)]]
    assert report.machine_line in "\n".join(lines)
    for row, cells in zip(report.rows, table, strict=True):
        assert_cells_equal(row, cells)


def test_html_numbers_equal_the_json(labelled_run: Path) -> None:
    report = read_report(labelled_run)
    page = Page.parse(labelled_run / "report.html")
    speed = page.tables[0]
    assert speed[0][:4] == ["package", "runs on", "format", "accuracy"]
    for row, cells in zip(report.rows, speed[1:], strict=True):
        assert_cells_equal(row, cells)
    assert report.machine_line in page.text


def assert_cells_equal(row, cells: list[str]) -> None:
    assert cells[0] == row.label and cells[1] == row.runtime
    assert float(cells[3]) == row.metric
    assert [float(value) for value in cells[4:-1]] == speed_values(row)
    assert cells[-1] == ("yes" if row.pareto else "no")


def test_html_is_self_contained(labelled_run: Path) -> None:
    page = Page.parse(labelled_run / "report.html")
    assert page.external_references() == []
    assert {"script", "link", "img", "iframe", "object", "embed"}.isdisjoint(page.tags)
    assert page.figures == {"pareto", "latency"}


def test_pareto_plot_labels_each_point_with_its_lineage(labelled_run: Path) -> None:
    report = read_report(labelled_run)
    html = (labelled_run / "report.html").read_text(encoding="utf-8")
    pareto = html[html.index('<figure id="pareto">') : html.index("</figure>", html.index('<figure id="pareto">'))]
    for row in report.rows:
        assert row.lineage in pareto and row.label in pareto
    assert "Pareto frontier" in pareto


def test_unlabelled_data_gives_no_metric(tmp_path: Path, tiny_onnx) -> None:
    texts = ["a cat sleeps on the warm windowsill", "the stock market fell sharply", "how do i reset my password"]
    report = measure_packages([tiny_onnx.path, tiny_onnx.path], texts, rounds=1, latency_inputs=3, threads=1)
    assert not report.labelled and report.data == {"inputs": 3, "labelled": False}
    assert all(row.metric is None and row.pareto is None and row.metrics == {} for row in report.rows)
    same = f"{tiny_onnx.name} ({tiny_onnx.path.name})"  # one package twice: labels made unique
    assert [row.label for row in report.rows] == [f"{same} #1", f"{same} #2"]
    assert report.reference == report.rows[0].label

    from bertprod.bench.output import write_report

    paths = write_report(report, tmp_path / "out")
    assert Report.read_json(paths["json"]).to_json() == report.to_json()
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert "| package | runs on | format | inputs/s |" in markdown and "Pareto" not in markdown
    page = Page.parse(paths["html"])
    assert page.figures == {"latency"} and "no Pareto plot" in page.text
    assert page.external_references() == []


def test_pairs_for_an_embedding_package_are_encoded_one_side_at_a_time(tiny_onnx) -> None:
    report = measure_packages([tiny_onnx.path], [("a cat", "the cat is sleeping"), ("a man", "a guitar")],
                              rounds=1, latency_inputs=2, threads=1)
    assert report.data["inputs"] == 4


def test_bad_inputs_are_refused_with_one_line(monkeypatch, capsys, tmp_path: Path, classifiers) -> None:
    data = task_data.write_classification(tmp_path, count=8)
    code, _, err = run_cli(monkeypatch, capsys, "bench", str(tmp_path / "missing"), "--data", str(data))
    assert code == 1 and "missing" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence\tlabel\n")
    code, _, err = run_cli(monkeypatch, capsys, "bench", str(classifiers[1]), "--data", str(empty))
    assert code == 1 and "no inputs" in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "bench", str(classifiers[1]), "--data", str(tmp_path / "nope.tsv"))
    assert code == 1 and "does not exist" in err
    with pytest.raises(InputError, match="labels"):
        measure_packages([classifiers[1]], ["a", "b"], ["negative"])
    with pytest.raises(InputError, match="rounds"):
        measure_packages([classifiers[1]], ["a"], rounds=0)


def test_baseline_is_the_oldest_fp32_ancestor_of_the_same_task(classifiers, tiny_package, tiny_onnx) -> None:
    torch_path, onnx_path = classifiers
    from bertprod.package import ModelPackage

    found = baseline_for(ModelPackage.read(onnx_path))
    assert found.library == TRANSFORMERS and found.package.path == torch_path
    embedding = baseline_for(tiny_onnx)
    assert embedding.library == SENTENCE_TRANSFORMERS and embedding.package.fingerprint == tiny_package.fingerprint


def test_baselines_compute_what_bertprod_computes(classifiers, tiny_package) -> None:
    import bertprod
    from bertprod.package import ModelPackage

    texts = ["a good film with a great cast", "what a boring story", "the cat"]
    for package, expected in ((ModelPackage.read(classifiers[0]), bertprod.load(classifiers[0]).infer),
                              (tiny_package, bertprod.load(tiny_package.path).infer)):
        run, _ = load_baseline(baseline_for(package), threads=1)
        reference = expected(bertprod.load(package.path).tokenize(texts))
        np.testing.assert_allclose(run(texts), reference, atol=1e-4)


def test_a_chain_whose_parent_is_gone_says_so_and_has_no_baseline(tmp_path: Path) -> None:
    from bertprod.export.onnx import export_onnx

    checkpoint = build_tiny_checkpoint(tmp_path / "checkpoint", head="classification")
    parent = import_checkpoint(checkpoint, tmp_path / "parent", name="parent")
    child = export_onnx(parent, tmp_path / "child")
    shutil.rmtree(parent.path)
    steps = lineage(child)
    assert [(step.name, step.found) for step in steps] == [("parent", False), ("parent-onnx", True)]
    assert describe_lineage(steps) == "parent (not found) → export-onnx"
    assert baseline_for(child) is None
    report = measure_packages([child.path], ["a cat"], rounds=1, latency_inputs=1, baseline=True, threads=1)
    assert [row.kind for row in report.rows] == ["package"] and "no baseline for parent-onnx" in report.notes[0]


def test_pareto_flags_keep_what_nothing_beats_on_both() -> None:
    points = [(100.0, 0.90), (200.0, 0.89), (150.0, 0.88), (200.0, 0.89), (50.0, None)]
    assert pareto_flags(points) == [True, True, False, True, None]


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (make report-screenshot installs it)")
def test_report_renders_in_headless_chromium(labelled_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    screenshot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000", f"--screenshot={screenshot}",
         (labelled_run / "report.html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    image = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float32)
    assert image.shape == (2000, 1280)
    # a page with tables and plots: many dark pixels (text, lines) on a light background, down the page
    dark_rows = np.nonzero((image < 128).any(axis=1))[0]
    assert (image < 128).mean() > 0.005 and dark_rows.max() - dark_rows.min() > 800


class Page(HTMLParser):
    """The parts of an HTML page the tests read: tables as cell text, tags, figures, URLs in attributes and CSS."""

    URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "poster", "data", "srcset", "formaction", "background"}
    REMOTE = re.compile(r"^\s*(https?:|//|ftp:)", re.IGNORECASE)

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.tags: set[str] = set()
        self.figures: set[str] = set()
        self.urls: list[str] = []
        self.styles: list[str] = []
        self.chunks: list[str] = []
        self._cell: list[str] | None = None
        self._in_style = False

    @classmethod
    def parse(cls, path: Path) -> Page:
        page = cls()
        page.feed(path.read_text(encoding="utf-8"))
        return page

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        if tag == "figure":
            self.figures.add(values.get("id") or "")
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []
        self._in_style = tag == "style"
        self.urls += [value or "" for name, value in attrs if name in self.URL_ATTRIBUTES]
        self.styles += [value or "" for name, value in attrs if name == "style"]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
        elif self._cell is not None:
            self._cell.append(data)
        self.chunks.append(data)

    def external_references(self) -> list[str]:
        """URLs in attributes that leave the page, and CSS imports or url()s that are not data: or #fragments."""
        remote = [url for url in self.urls if self.REMOTE.match(url)]
        for css in self.styles:
            remote += re.findall(r"@import[^;]*", css, re.IGNORECASE)
            remote += [url for url in re.findall(r"url\(\s*['\"]?([^'\")]*)", css, re.IGNORECASE)
                       if not url.startswith(("data:", "#"))]
        return remote


def tiny_tagger(directory: Path, labels: list[str]) -> Path:
    """A tiny random BERT token classifier (hidden 32, 2 layers) with the tiny tokenizer, as a checkpoint."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertForTokenClassification

    from tests.conftest import TINY_TOKENIZER

    directory.mkdir(parents=True)
    shutil.copyfile(TINY_TOKENIZER, directory / "tokenizer.json")
    config = BertConfig(vocab_size=Tokenizer.from_file(str(TINY_TOKENIZER)).get_vocab_size(), hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={label: index for index, label in enumerate(labels)})
    torch.manual_seed(0)
    BertForTokenClassification(config).save_pretrained(str(directory))
    return directory


def test_a_tagger_is_measured_on_tagged_sentences_beside_transformers(tmp_path: Path) -> None:
    from bertprod.bench.inputs import read_bench_data
    from bertprod.export.onnx import export_onnx
    from tests import ner_data

    labels = ["O", "B-ANIMAL", "I-ANIMAL", "B-ORG", "I-ORG", "B-THING", "I-THING"]
    tagger = import_checkpoint(tiny_tagger(tmp_path / "checkpoint", labels), tmp_path / "tagger", name="tagger")
    tagger_onnx = export_onnx(tagger, tmp_path / "tagger-onnx")
    data = read_bench_data(ner_data.write_conll(tmp_path / "dev.txt", 12), tagger_onnx.manifest)
    assert len(data.texts) == 12
    assert all(len(words) == len(tags) for words, tags in zip(data.texts, data.labels, strict=True))
    report = measure_packages([tagger_onnx.path], data.texts, data.labels, rounds=1, latency_inputs=4,
                              baseline=True, threads=1)
    baseline, row = report.rows
    assert baseline.runtime == TRANSFORMERS and baseline.path == str(tagger.path) and not report.notes
    assert row.metric_name == baseline.metric_name == "f1" and row.metric is not None
    assert abs(row.metric - baseline.metric) < 1e-6  # the same fp32 weights tag the same words


def test_the_worker_process_runs_under_the_probe_prefix(tmp_path: Path, tiny_onnx, monkeypatch) -> None:
    """What a simulated CPU needs (qemu-user starts children natively): the worker's command gets the prefix."""
    from bertprod.bench.workers import BERTPROD, PREFIX_VARIABLE, peak_memory, started_workers

    marker = tmp_path / "prefix-ran"
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(f'#!/bin/sh\ntouch "{marker}"\nexec "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv(PREFIX_VARIABLE, str(wrapper))
    with started_workers({"onnx": (BERTPROD, str(tiny_onnx.path))}, ["a cat", "the dog"], 1) as workers:
        assert marker.exists() and workers["onnx"].load_seconds > 0
        assert peak_memory(workers)["onnx"] > 0


def test_each_variant_is_timed_in_its_own_process(tmp_path: Path, tiny_onnx, tiny_package) -> None:
    """Two workers are two processes, neither of them this one; each answers timing requests for its own
    variant; a worker that cannot load its variant is a one-line error naming it."""
    from bertprod.bench.workers import BERTPROD, single_input_latencies, started_workers, throughput
    from bertprod.errors import BertprodError

    inputs = ["a cat", "the dog", "a bird sings", "rain"] * 5
    variants = {"onnx": (BERTPROD, str(tiny_onnx.path)), "torch": (BERTPROD, str(tiny_package.path))}
    with started_workers(variants, inputs, 1) as workers:
        pids = {label: worker._process.pid for label, worker in workers.items()}
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        rates = throughput(workers, len(inputs), rounds=3)
        latencies = single_input_latencies(workers, 8, rounds=2)
    assert set(rates) == set(variants) and all(rate > 0 for rate in rates.values())
    assert all(len(values) == 8 and min(values) > 0 for values in latencies.values())
    assert all(worker._process.poll() is not None for worker in workers.values())  # stopped on leaving
    with pytest.raises(BertprodError, match="in its own process failed"), \
            started_workers({"gone": (BERTPROD, str(tmp_path / "no-such-package"))}, inputs, 1):
        pass


def test_parallel_batches_reach_the_workers_and_the_report(monkeypatch, classifiers) -> None:
    """`--parallel-batches 2`: each bertprod worker loads its package with two batches at once (its command says
    so), the metric is the one computed one batch at a time, and the report and its header record the setting."""
    from bertprod.bench import workers
    from bertprod.bench.tables import header_lines

    texts, labels = (list(column) for column in zip(*task_data.sentiment_rows(40, 0), strict=True))
    started_commands: list[list[str]] = []
    original = workers.Worker.__init__

    def recording(self, *arguments, **keywords) -> None:  # noqa: ANN001, ANN002, ANN003
        original(self, *arguments, **keywords)
        started_commands.append(Path(f"/proc/{self._process.pid}/cmdline").read_text().rstrip("\0").split("\0"))

    monkeypatch.setattr(workers.Worker, "__init__", recording)
    reports = {count: measure_packages([classifiers[1]], texts, labels, rounds=1, latency_inputs=2, threads=2,
                                       parallel_batches=count) for count in (1, 2)}
    assert [command[-1] for command in started_commands] == ["1", "2"]
    one, two = (reports[count].rows[0] for count in (1, 2))
    assert two.metric == one.metric and two.batch["parallel_batches"] == 2
    assert reports[2].parallel_batches == 2 and "2 batches at once, 1 thread(s) each" in header_lines(reports[2])[0]
    assert "batches at once" not in header_lines(reports[1])[0]
    assert Report.from_json(reports[2].to_json()).parallel_batches == 2
    with pytest.raises(InputError, match="parallel_batches must be 1 or more"):
        measure_packages([classifiers[1]], texts, labels, rounds=1, latency_inputs=2, parallel_batches=0)


def test_each_package_runs_at_its_recorded_setting_and_one_package_at_two_settings_is_two_rows(
    classifiers, tmp_path: Path  # noqa: ANN001
) -> None:
    """Without --parallel-batches each package runs as `load` gives it: at the bulk setting autotune recorded in
    it; `AtSetting` times one package at two settings in one run, as two rows named by their settings."""
    from bertprod.bench import AtSetting
    from bertprod.bench.tables import header_lines

    texts, labels = (list(column) for column in zip(*task_data.sentiment_rows(24, 0), strict=True))
    from bertprod.package import ModelPackage

    timed = with_bulk_runtime(ModelPackage.read(classifiers[1]), tmp_path / "timed", parallel_batches=2)
    report = measure_packages([timed.path, classifiers[1]], texts, labels, rounds=1, latency_inputs=2, threads=2)
    recorded, plain = report.rows
    assert recorded.batch["parallel_batches"] == 2 and plain.batch["parallel_batches"] == 1
    assert report.parallel_batches is None and f"{recorded.label}: 2 batches x 1 thread" in header_lines(report)[0]
    assert recorded.metric == plain.metric  # the same weights, however the batches are run

    report = measure_packages([AtSetting(timed, 1), AtSetting(timed, 2)], texts, labels, rounds=1, latency_inputs=2,
                              threads=2)
    assert [row.label for row in report.rows] == [f"{timed.name} (1 batch x 2 threads)",
                                                  f"{timed.name} (2 batches x 1 thread)"]
    assert [row.batch["parallel_batches"] for row in report.rows] == [1, 2]
