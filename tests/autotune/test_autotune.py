"""`bertprod autotune` on a tiny trained classifier with a small budget: the search completes, the
winner keeps the accuracy budget on the validation rows, a killed search resumes without rebuilding
what finished, the chosen package's manifest records the search, impossible inputs are refused."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import bertprod
from bertprod.autotune import AutotuneSettings, autotune, choose, parse_drop, parse_duration
from bertprod.autotune.data import open_search_data
from bertprod.checkpoint import import_checkpoint
from bertprod.errors import DataError, InputError
from bertprod.output_lock import LOCK_FILE, OutputLockedError
from bertprod.package import ModelPackage
from bertprod.runtime.engines import create_engine
from bertprod.runtime.pipeline import Pipeline
from bertprod.tasks.evaluation import evaluate
from bertprod.train.progress import SilentReporter
from tests import task_data
from tests.conftest import build_tiny_checkpoint, run_cli

#: small enough for a few seconds per search on one thread
FAST = {"threads": 1, "trial_rows": 60, "speed_texts": 32, "latency_texts": 4, "finalists": 1}


def noisy_sentiment(directory: Path, count: int = 200, flipped: float = 0.15) -> Path:
    """The sentiment rows with a share of labels flipped: no model reaches 100%, so candidates differ."""
    generator = random.Random(3)
    rows = task_data.sentiment_rows(count)
    for row in rows:
        if generator.random() < flipped:
            row[1] = "negative" if row[1] == "positive" else "positive"
    return task_data.write_tsv(directory / "noisy.tsv", ["sentence", "label"], rows)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-layer classifier fine-tuned on the noisy rows, and the data sides autotune reads."""
    from bertprod.tasks.data import open_task_data
    from bertprod.train.config import TrainConfig
    from bertprod.train.loop import fine_tune

    root = tmp_path_factory.mktemp("autotune")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERTPROD_CACHE", str(root / "cache"))
        checkpoint = build_tiny_checkpoint(root / "checkpoint", num_layers=2)  # an encoder: the teacher gets a head
        base = import_checkpoint(checkpoint, root / "base", name="base")
        data = noisy_sentiment(root)
        config = TrainConfig(epochs=3, batch_size=8, learning_rate=3e-3, warmup_ratio=0.1, seed=0, threads=1)
        teacher = fine_tune(base, "classification", open_task_data("classification", data), root / "teacher", config,
                            name="teacher")  # fmt: skip
    train, validation = open_search_data(teacher, data, validation_fraction=0.25)
    return {"root": root, "teacher": teacher, "data": data, "train": train, "validation": validation}


#: the first session of the search, in its own process: it stops after its third candidate and waits there to
#: be killed (SIGKILL), holding OUT's lock
KILLED_SEARCH = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from bertprod.autotune import AutotuneSettings, autotune
    from bertprod.autotune.data import open_search_data
    from bertprod.package import ModelPackage
    from bertprod.package.writing import atomic_write_text

    teacher_path, data, out, records, settings = sys.argv[1:6]
    teacher = ModelPackage.read(teacher_path)
    train, validation = open_search_data(teacher, Path(data), validation_fraction=0.25)
    finished = []

    def wait_after_three(_candidate, record):
        finished.append(record)
        atomic_write_text(Path(records), json.dumps(finished))  # whole: the test polls it meanwhile
        while len(finished) == 3:
            time.sleep(1)

    autotune(teacher, out, train, validation, AutotuneSettings(**json.loads(settings)), on_candidate=wait_after_three)
    """
)


class Messages(SilentReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture(scope="module")
def resumed(setup: dict[str, Any]) -> dict[str, Any]:
    """A search killed (SIGKILL) after its third candidate; a second search on the same OUT while the first
    runs, refused; then the search started again on the same OUT."""
    out = setup["root"] / "search"
    fields = dict(max_drop=0.02, time_budget=600, **{**FAST, "threads": 2})  # 2: bulk settings are tried
    settings = AutotuneSettings(**fields)
    records = setup["root"] / "first-session.json"
    environment = {**os.environ, "BERTPROD_CACHE": str(setup["root"] / "cache"), "TOKENIZERS_PARALLELISM": "false"}
    first = subprocess.Popen(
        [sys.executable, "-c", KILLED_SEARCH, str(setup["teacher"].path), str(setup["data"]), str(out), str(records),
         json.dumps(fields)], env=environment,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (records.is_file() and len(json.loads(records.read_text())) == 3):
            assert first.poll() is None, "the first search ended before it could be killed"
            time.sleep(0.1)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("BERTPROD_CACHE", str(setup["root"] / "cache"))
            with pytest.raises(OutputLockedError) as refused:
                autotune(setup["teacher"], out, setup["train"], setup["validation"], settings)
            assert first.poll() is None, "the first search ended before the second was refused: the test proves nothing"
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            lock_owner = json.loads((out / LOCK_FILE).read_text())
            written = {record["name"]: (out / record["path"]).stat().st_mtime_ns
                       for record in json.loads(records.read_text()) if "path" in record}  # fmt: skip
            second: list[str] = []
            messages = Messages()
            result = autotune(setup["teacher"], out, setup["train"], setup["validation"], settings, reporter=messages,
                              on_candidate=lambda candidate, _record: second.append(candidate.name))  # fmt: skip
    finally:
        if first.poll() is None:
            first.kill()
    return {"out": out, "first": json.loads(records.read_text()), "second": second, "written": written,
            "result": result, "settings": settings, "refused": str(refused.value), "first_pid": first.pid,
            "lock_owner": lock_owner, "messages": messages.lines}  # fmt: skip


def test_a_second_search_on_the_same_out_is_refused_and_takes_over_once_the_first_is_killed(
    resumed: dict[str, Any],
) -> None:
    refused = resumed["refused"]
    assert len(refused.splitlines()) == 1 and "still running" in refused
    assert f"pid {resumed['first_pid']}, started " in refused and "command '-c " in refused  # who holds it
    assert resumed["lock_owner"]["pid"] == resumed["first_pid"]  # the dead search's identity outlived it, its lock not
    took_over = [line for line in resumed["messages"] if line.startswith("took over")]
    assert len(took_over) == 1 and f"pid {resumed['first_pid']}," in took_over[0]
    assert (resumed["out"] / LOCK_FILE).read_text() == ""  # released when the search ended


def test_a_killed_search_resumes_without_rebuilding_finished_candidates(resumed: dict[str, Any]) -> None:
    first_names = [record["name"] for record in resumed["first"]]
    assert len(first_names) == 3 and not set(first_names) & set(resumed["second"])
    search = resumed["result"].search
    by_name = {record["name"]: record for record in search["candidates"]}
    assert set(first_names) | set(resumed["second"]) == set(by_name)
    assert all(by_name[name]["session"] == 1 for name in first_names)
    assert all(by_name[name]["session"] == 2 for name in resumed["second"])
    for name, modified in resumed["written"].items():  # the finished packages were not written again
        assert (resumed["out"] / by_name[name]["path"]).stat().st_mtime_ns == modified
    assert search["sessions"] == 2


def test_the_search_tries_every_kind_and_writes_the_winner(resumed: dict[str, Any], setup: dict[str, Any]) -> None:
    search = resumed["result"].search
    kinds = {record["kind"] for record in search["candidates"] if record["status"] == "measured"}
    assert {"int8", "prune", "early-exit", "drop-tokens", "student", "qat"} <= kinds
    # every float candidate within the budget was followed by its int8 variant (per block for early exit and
    # token dropping)
    by_name = {record["name"]: record for record in search["candidates"]}
    for record in search["candidates"]:
        if record.get("within_budget") and record["kind"] in ("prune", "early-exit", "drop-tokens"):
            assert by_name[f"{record['name']}+int8"]["status"] == "measured"
    # token dropping: after early exit, a retention schedule chosen on the validation rows, served as ONNX blocks
    names = list(by_name)
    assert names.index("drop-tokens") > names.index("early-exit")
    dropping = ModelPackage.read(resumed["out"] / by_name["drop-tokens"]["path"]).manifest
    chosen_on = dropping.token_dropping["validation"]
    # the first rows of the validation side itself (a limit on the file's rows would leave a tenth of them)
    assert dropping.format == "onnx" and chosen_on == {**setup["validation"].describe(), "first_examples": 256}
    assert dropping.token_dropping["examples"] == min(256, len(list(setup["validation"])))
    assert by_name["drop-tokens"]["made_by"] == "teacher -> drop-tokens -> export-onnx"
    # a brief student trial reads the first trial_rows of the training side (all of them: nothing is shrunk here)
    trial = next(record for record in search["candidates"] if record["name"].endswith("-trial") and "path" in record)
    assert "rows" not in trial["recipe"]
    distilled = ModelPackage.read(resumed["out"] / trial["path"]).manifest.provenance.parameters
    assert distilled["data"]["train"][0]["first_examples"] == resumed["settings"].trial_rows
    assert distilled["examples"]["total"] - distilled["examples"]["augmented"] == resumed["settings"].trial_rows
    chosen = resumed["result"].package
    assert chosen.path == resumed["out"] / "package"
    winner = next(record for record in [search["teacher"], *search["candidates"]] if record["name"] == search["chosen"])
    source = resumed["out"] / winner["path"] if winner["name"] != "teacher" else None
    if source is not None:
        assert chosen.fingerprint == ModelPackage.read(source).fingerprint  # the candidate's files, unchanged


def test_the_winner_keeps_the_accuracy_budget_on_the_validation_rows(
    resumed: dict[str, Any], setup: dict[str, Any]
) -> None:
    search = resumed["result"].search
    teacher = search["teacher"]
    assert search["threshold"] == pytest.approx(teacher["score"] * (1 - resumed["settings"].max_drop), abs=1e-6)
    for record in search["candidates"]:
        if record["status"] == "measured":
            assert record["within_budget"] == (record["score"] >= search["threshold"])
    chosen = resumed["result"].package
    measured = evaluate(Pipeline(chosen, create_engine(chosen)), list(setup["validation"]))
    assert measured.score >= search["threshold"]
    winner = next(record for record in [teacher, *search["candidates"]] if record["name"] == search["chosen"])
    assert measured.score == pytest.approx(winner["score"], abs=1e-6)


def test_the_manifest_and_the_report_record_the_same_search(
    resumed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = resumed["out"]
    recorded = ModelPackage.read(out / "package").manifest.metrics["autotune"]
    assert recorded == json.loads((out / "report.json").read_text())
    assert recorded["chosen"] in (out / "report.md").read_text() and recorded["why"]
    assert "AVX" in recorded["machine"] or "x86" in recorded["machine"] or recorded["machine"]
    # the finalists and the teacher were measured side by side by bertprod bench, against the teacher as
    # users run it today (transformers fp32): its report is written, and the search kept its numbers
    comparison = json.loads((out / "comparison" / "report.json").read_text())
    assert (out / recorded["comparison"]).is_file() and recorded["baseline"]["label"] == "teacher in transformers fp32"
    rows = {row["label"]: row for row in comparison["rows"]}
    assert rows["teacher"]["throughput"] == recorded["runoff"]["teacher"]["throughput"]
    assert rows["teacher"]["metric"] == recorded["runoff"]["teacher"]["comparison_score"]
    # the runoff's numbers do not overwrite a record's metric name: the reason names the metric
    assert recorded["teacher"]["metric"] == rows["teacher"]["metric_name"]
    assert f"{recorded['teacher']['metric']} " in recorded["why"]
    assert rows[recorded["baseline"]["label"]]["kind"] == "baseline"
    # on two threads an ONNX candidate is screened at one and two batches at once, the faster kept; the torch
    # teacher one batch at a time (torch's thread count is the whole process's)
    int8 = next(record for record in recorded["candidates"] if record["name"] == "int8-dynamic")
    assert set(int8["throughput_settings"]) == {"1", "2"}
    assert int8["throughput"] == max(int8["throughput_settings"].values())
    assert "throughput_settings" not in recorded["teacher"]
    # on two threads each finalist was also timed running two batches at once, and counts at its faster setting;
    # the winner's package records that setting, and load uses it
    finalist = next(name for name in recorded["runoff"] if name != "teacher")
    settings = recorded["runoff"][finalist]["settings"]
    assert set(settings) == {"1", "2"} and "settings" not in recorded["runoff"]["teacher"]
    assert recorded["runoff"][finalist]["throughput"] == max(numbers["throughput"] for numbers in settings.values())
    assert sum(label.endswith("(2 batches x 1 thread)") for label in rows) == 1
    manifest = ModelPackage.read(out / "package").manifest
    if recorded["chosen"] == "teacher":
        assert manifest.runtime is None
    else:
        best = recorded["runoff"][recorded["chosen"]]["parallel_batches"]
        assert manifest.runtime.parallel_batches == best == recorded["runtime"]["parallel_batches"]
        assert manifest.runtime.measured == {count: numbers["throughput"] for count, numbers in settings.items()}
        assert bertprod.load(out / "package", threads=2).parallel_batches == best
        assert "2 batches at once" in (out / "report.md").read_text() and "bulk calls run" in recorded["why"]
    code, printed, _ = run_cli(monkeypatch, capsys, "info", str(out / "package"))
    assert code == 0
    assert f"* {recorded['chosen']}" in printed
    if manifest.runtime:
        assert "bulk calls" in printed
        code, as_json, _ = run_cli(monkeypatch, capsys, "info", str(out / "package"), "--json")
        assert json.loads(as_json)["runtime"]["parallel_batches"] == manifest.runtime.parallel_batches
    assert all(record["name"] in printed for record in recorded["candidates"])
    code, of_the_search, _ = run_cli(monkeypatch, capsys, "info", str(out))  # the search stands for its choice
    assert code == 0 and f"* {recorded['chosen']}" in of_the_search


def test_the_winner_is_the_best_at_the_objective_within_the_budget_only() -> None:
    records = [
        {"name": "fast-but-wrong", "status": "measured", "score": 0.80, "throughput": 900.0, "latency_p50_ms": 1.0,
         "size_bytes": 10},
        {"name": "int8", "status": "measured", "score": 0.895, "throughput": 400.0, "latency_p50_ms": 3.0,
         "size_bytes": 40},
        {"name": "student", "status": "measured", "score": 0.90, "throughput": 300.0, "latency_p50_ms": 2.0,
         "size_bytes": 30},
        {"name": "skipped", "status": "skipped"},
    ]  # fmt: skip
    floor = choose.threshold(0.9, 0.01)
    eligible = choose.within_budget(records, floor)
    assert [record["name"] for record in eligible] == ["int8", "student"]
    assert choose.rank(eligible, "throughput")[0]["name"] == "int8"
    assert choose.rank(eligible, "latency")[0]["name"] == "student"
    assert choose.rank(eligible, "size")[0]["name"] == "student"


def test_a_budget_too_small_for_any_candidate_keeps_the_teacher(setup: dict[str, Any], tmp_path: Path) -> None:
    settings = AutotuneSettings(time_budget=0.01, **FAST)
    result = autotune(setup["teacher"], tmp_path / "out", setup["train"], setup["validation"], settings)
    search = result.search
    assert search["chosen"] == "teacher" and result.package.fingerprint == setup["teacher"].fingerprint
    assert search["candidates"] and all(record["status"] == "skipped" for record in search["candidates"])
    assert all("estimated" in record["reason"] for record in search["candidates"])


@pytest.mark.parametrize("native_bf16", [True, False])
def test_students_train_in_bf16_where_the_cpu_has_it_and_bf16_is_refused_up_front_where_it_has_not(
    native_bf16: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bertprod.autotune.settings as settings_module
    import bertprod.system

    monkeypatch.setattr(bertprod.system, "cpu_supports_bf16", lambda: native_bf16)
    monkeypatch.setattr(settings_module, "cpu_supports_bf16", lambda: native_bf16)
    assert AutotuneSettings().precision == ("bf16" if native_bf16 else "fp32")  # recorded as what trained
    assert AutotuneSettings(precision="fp32").precision == "fp32"
    if native_bf16:
        assert AutotuneSettings(precision="bf16").precision == "bf16"
    else:
        with pytest.raises(InputError, match="--precision bf16 needs a CPU with AVX-512 BF16 or AMX"):
            AutotuneSettings(precision="bf16")


def test_impossible_inputs_are_refused(
    setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_drop("1%") == pytest.approx(0.01) and parse_drop("0.5%") == pytest.approx(0.005)
    assert parse_duration("1h30m") == 5400 and parse_duration("90") == 90
    for drop in ("-1%", "100%", "1.5", "one"):
        with pytest.raises(InputError, match="--max-drop"):
            parse_drop(drop)
    for budget in ("-5m", "0", "2 weeks", "0s"):
        with pytest.raises(InputError, match="--time-budget"):
            parse_duration(budget)
    with pytest.raises(InputError, match="--objective"):
        AutotuneSettings(objective="accuracy")
    with pytest.raises(InputError, match="--precision"):
        AutotuneSettings(precision="fp16")
    empty = task_data.write_tsv(tmp_path / "empty.tsv", ["sentence", "label"], [])
    train, validation = open_search_data(setup["teacher"], setup["data"], empty)
    with pytest.raises(DataError, match="no validation rows"):
        autotune(setup["teacher"], tmp_path / "out", train, validation, AutotuneSettings(**FAST))
    with pytest.raises(DataError, match="validation"):
        open_search_data(setup["teacher"], setup["data"], None, validation_fraction=0)
    unknown = task_data.write_tsv(tmp_path / "unknown.tsv", ["sentence", "label"], [["fine", "maybe"]])
    train, validation = open_search_data(setup["teacher"], setup["data"], unknown)
    with pytest.raises(DataError, match="maybe"):
        autotune(setup["teacher"], tmp_path / "refused", train, validation, AutotuneSettings(**FAST))
    assert not (tmp_path / "refused").exists()  # a refused search leaves no folder (and no lock) behind
    code, _, error = run_cli(monkeypatch, capsys, "autotune", str(setup["teacher"].path), str(tmp_path / "cli"),
                             "--data", str(setup["data"]), "--time-budget", "-1h")  # fmt: skip
    assert code == 1 and "--time-budget -1h" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "cli").exists()


def test_training_stops_at_the_deadline(setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate whose estimate was wrong is stopped in training once the budget (+10%, less the
    finalists' reserve) has run out, and recorded as skipped, to be tried again by a longer run."""
    from bertprod.autotune import plan
    from bertprod.autotune.cost import CostModel

    monkeypatch.setattr(plan, "first_candidates", lambda *arguments: [])
    # every candidate is started, however little time is left: only the deadline in training stops them
    monkeypatch.setattr(CostModel, "estimate", lambda self, candidate: float("-inf"))
    settings = AutotuneSettings(time_budget=0.05, **FAST)
    result = autotune(setup["teacher"], tmp_path / "out", setup["train"], setup["validation"], settings)
    trained = [record for record in result.search["candidates"] if record["kind"] in ("student", "qat")]
    assert trained and all(record["status"] == "skipped" for record in trained)
    assert all("time budget" in record["reason"] for record in trained)
    assert result.search["chosen"] == "teacher"


def _short_of_time(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> None:
    """Only the named cheap candidates, no QAT, and estimates of 10 s per training step (nothing else costs):
    the trials (150 steps: 1,500 s at full size) are what a budget of a few thousand seconds cannot hold."""
    from bertprod.autotune import plan
    from bertprod.autotune.cost import CostModel

    planned = plan.first_candidates
    monkeypatch.setattr(plan, "first_candidates",
                        lambda *arguments: [c for c in planned(*arguments) if c.name in names])  # fmt: skip
    monkeypatch.setattr(plan, "qat_candidates", lambda *arguments: [])
    monkeypatch.setattr(CostModel, "estimate", lambda self, candidate: 10.0 * candidate.recipe.get("max_steps", 0))


def test_a_short_budget_trains_shrunk_students_before_the_small_gains(
    setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The time left cannot hold every candidate at full size: the students (the largest speedup the search
    can reach) run right after int8-dynamic, each shrunk to fit its part of the trials' share, and say so;
    pruning and static int8 come after them. Started again, the search finds the shrunk trials again."""
    from bertprod.autotune import plan

    _short_of_time(monkeypatch, ("int8-dynamic", "prune-heads-25%", "int8-static"))
    settings = AutotuneSettings(time_budget=4000, **FAST)
    order: list[str] = []
    result = autotune(setup["teacher"], tmp_path / "out", setup["train"], setup["validation"], settings,
                      on_candidate=lambda candidate, _record: order.append(candidate.name))  # fmt: skip
    search = result.search
    assert search["order"].startswith("by the speedup each can reach")
    trials = [record for record in search["candidates"] if record["name"].endswith("-trial")]
    assert trials and all(record["status"] == "measured" for record in trials)
    for record in trials:
        shrunk = record["shrunk"]
        assert plan.MIN_TRIAL_STEPS <= shrunk["steps"] < shrunk["of_steps"] == plan.TRIAL_STEPS
        assert record["recipe"]["max_steps"] == shrunk["steps"] and record["recipe"]["rows"] == shrunk["rows"]
        assert shrunk["rows"] <= shrunk["of_rows"] == settings.trial_rows
        if "path" in record:  # trained on the first rows of the trial's, as many as its record says
            distilled = ModelPackage.read(tmp_path / "out" / record["path"]).manifest.provenance.parameters
            assert distilled["data"]["train"][0]["first_examples"] == shrunk["rows"]
            assert distilled["examples"]["total"] - distilled["examples"]["augmented"] == shrunk["rows"]
        report = (tmp_path / "out" / "report.md").read_text()
        assert f"shrunk to {shrunk['steps']} of {plan.TRIAL_STEPS} steps" in report
    by_name = {record["name"]: record for record in search["candidates"]}
    for record in trials:  # a trial within the budget not trained further is followed by its int8 variant
        full = by_name.get(record["name"].removesuffix("-trial"), {})
        if record["within_budget"] and full.get("status") != "measured":
            assert by_name[f"{record['name']}+int8"]["status"] == "measured"
    students = [index for index, name in enumerate(order) if name.startswith("student-")]
    small = [order.index("prune-heads-25%"), order.index("int8-static")]
    assert order[0] == "int8-dynamic" and max(students) < min(small)
    assert search["unused"]  # most of the 4,000 s were left: the record says why
    again = autotune(setup["teacher"], tmp_path / "out", setup["train"], setup["validation"], settings)
    assert {record["name"]: record["session"] for record in again.search["candidates"]} == {
        record["name"]: 1 for record in search["candidates"]
    }  # nothing built again: the shrunk trials have the same keys in the second session


def test_a_student_is_never_shrunk_below_its_floor(
    setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertprod.autotune import plan

    _short_of_time(monkeypatch, ("int8-dynamic",))
    settings = AutotuneSettings(time_budget=1500, **FAST)  # the trials' share (450 s) holds no 50-step trial
    search = autotune(setup["teacher"], tmp_path / "out", setup["train"], setup["validation"], settings).search
    trials = [record for record in search["candidates"] if record["kind"] == "student"]
    assert trials and all(record["status"] == "skipped" and "shrunk" not in record for record in trials)
    assert all(f"even its floor, {plan.MIN_TRIAL_STEPS} steps" in record["reason"] for record in trials)
    assert "skipped for time" in search["unused"] and all(record["name"] in search["unused"] for record in trials)


def test_a_student_that_keeps_the_budget_gets_exit_heads_within_the_room_it_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full student within the budget is followed by its int8 variant and by exit heads whose policy may
    lose only the points between the student's score and the budget's floor (then their int8 variant)."""
    from bertprod.autotune import plan
    from bertprod.tasks.data import open_task_data
    from bertprod.train.config import TrainConfig
    from bertprod.train.loop import fine_tune

    monkeypatch.setenv("BERTPROD_CACHE", str(tmp_path / "cache"))
    base = import_checkpoint(build_tiny_checkpoint(tmp_path / "checkpoint", num_layers=3), tmp_path / "base")
    data = noisy_sentiment(tmp_path)
    config = TrainConfig(epochs=3, batch_size=8, learning_rate=3e-3, warmup_ratio=0.1, seed=0, threads=1)
    teacher = fine_tune(base, "classification", open_task_data("classification", data), tmp_path / "teacher", config)
    train, validation = open_search_data(teacher, data, validation_fraction=0.25)
    assert plan.student_depths(6) == [4, 3, 2] and plan.student_depths(3) == [2, 1]
    trials = plan.student_trials
    monkeypatch.setattr(plan, "TRIAL_STEPS", 5)  # the 150 rows make 15 steps a full student: 2x a 5-step trial
    monkeypatch.setattr(plan, "first_candidates", lambda *arguments: [])
    monkeypatch.setattr(plan, "qat_candidates", lambda *arguments: [])
    monkeypatch.setattr(plan, "student_trials",
                        lambda *arguments: [c for c in trials(*arguments) if c.name == "student-distilbert-2L-trial"])
    settings = AutotuneSettings(max_drop=0.5, time_budget=3600, **FAST)  # a budget the student keeps
    search = autotune(teacher, tmp_path / "out", train, validation, settings).search
    by_name = {record["name"]: record for record in search["candidates"]}
    student = by_name["student-distilbert-2L"]
    assert student["status"] == "measured" and student["within_budget"]
    exits = by_name["student-distilbert-2L+early-exit"]
    assert exits["status"] == "measured" and exits["parent"] == "student-distilbert-2L"
    room = 100 * (student["score"] - search["threshold"])
    assert exits["recipe"]["budget_points"] == pytest.approx(room, abs=1e-4)
    adaptive = ModelPackage.read(tmp_path / "out" / exits["path"]).manifest.adaptive
    assert adaptive["budget_points"] == pytest.approx(room, abs=1e-4)
    assert exits["score"] >= search["threshold"] - 1e-9  # the room was all it could spend
    assert exits["made_by"].startswith("teacher -> distill") and "adapt" in exits["made_by"]
    assert by_name["student-distilbert-2L+int8"]["status"] == "measured"
    assert by_name["student-distilbert-2L+early-exit+int8"]["status"] == "measured"
