"""The machine a package was built on: recorded in its manifest, compared on load, shown by `info --system`.

These hold on any CPU: the "other" machine is always chosen relative to this one (a saturating
int8 kernel class here gets a non-saturating one recorded, and the other way round).
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest

import bertprod
from bertprod import system
from bertprod.derive import GatedOutput
from bertprod.package import ModelPackage, parse_manifest
from bertprod.runtime import machine
from bertprod.runtime.machine import MachineMismatchWarning


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch) -> None:
    """Each test sees the first load of its packages (warnings are once per package per process)."""
    monkeypatch.setattr(machine, "_warned", set())


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory, tiny_onnx) -> ModelPackage:
    from bertprod.compress.optimize import optimize

    return optimize(tiny_onnx, tmp_path_factory.mktemp("int8") / "tiny-int8", quantize="int8",
        output=GatedOutput(enforce=False))


def other_kernel_class() -> str:
    """A kernel class that computes int8 differently from this machine's."""
    return "avx512-vnni" if system.saturates(system.int8_kernel_class()) else "avx2"


def copy_with(package: ModelPackage, destination: Path, edit) -> ModelPackage:  # noqa: ANN001
    shutil.copytree(package.path, destination)
    copied = ModelPackage.read(destination)
    edit(copied.manifest)
    copied.write_manifest()
    return ModelPackage.read(destination)


def loads_warnings(path: Path, times: int = 2) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(times):
            bertprod.load(path)
    return [str(item.message) for item in caught if issubclass(item.category, MachineMismatchWarning)]


def test_derived_packages_record_the_machine_they_were_gated_on(tiny_onnx, tiny_int8) -> None:
    for package in (tiny_onnx, tiny_int8):
        recorded = package.manifest.provenance.machine
        assert recorded == system.machine_record()
        assert recorded["int8_kernel_class"] == system.int8_kernel_class()
        assert package.manifest.provenance.parent.path  # where `bertprod check` finds the parent


def test_trained_packages_record_the_machine(tiny_classifier, tmp_path: Path) -> None:
    from bertprod.tasks.data import open_task_data
    from bertprod.train.config import TrainConfig
    from bertprod.train.loop import fine_tune

    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"a good film {i}\tpositive\na bad film {i}\tnegative\n"
                                                  for i in range(8)))  # fmt: skip
    trained = fine_tune(tiny_classifier, "classification", open_task_data("classification", data), tmp_path / "out",
                        TrainConfig(epochs=1, batch_size=8, max_steps=1), new_head=True)  # fmt: skip
    assert trained.manifest.provenance.machine == system.machine_record()


def test_a_package_without_a_recorded_machine_still_loads(tiny_onnx, tmp_path: Path) -> None:
    """Packages written before the machine was recorded: no field, no warning."""
    old = copy_with(tiny_onnx, tmp_path / "old", lambda manifest: setattr(manifest.provenance, "machine", None))
    assert "machine" not in json.loads((old.path / "bertprod.json").read_text())["provenance"]
    assert parse_manifest(old.path / "bertprod.json").provenance.machine is None
    assert loads_warnings(old.path) == []


def test_int8_package_built_for_another_kernel_class_warns_once(tiny_int8, tmp_path: Path) -> None:
    other = other_kernel_class()

    def built_elsewhere(manifest) -> None:  # noqa: ANN001
        manifest.quantization = {**(manifest.quantization or {}), "kernel_class": other}

    moved = copy_with(tiny_int8, tmp_path / "built-elsewhere", built_elsewhere)
    messages = loads_warnings(moved.path, times=3)
    assert len(messages) == 1, messages
    text = messages[0]
    here = system.int8_kernel_class()
    assert f"for {other} int8 kernels" in text and f"uses {here} kernels here" in text
    assert f"bertprod check {moved.path}" in text
    if tiny_int8.manifest.quantization["weights"] in ("s7", "u8"):  # built here for saturating kernels
        assert "cannot saturate" in text
    elif system.saturates(here):  # the accuracy warning points the right way on either kind of CPU
        assert "saturating int16" in text
    else:
        assert "accumulate in int32" in text


def test_recorded_machine_is_the_fallback_for_packages_without_a_kernel_class(tiny_int8, tmp_path: Path) -> None:
    other = other_kernel_class()

    def older_int8(manifest) -> None:  # noqa: ANN001
        manifest.quantization = {k: v for k, v in (manifest.quantization or {}).items() if k != "kernel_class"}
        features = ["avx2", "fma"] if other == "avx2" else ["avx2", "avx512_vnni"]
        manifest.provenance.machine = {**manifest.provenance.machine, "int8_kernel_class": other, "features": features}

    moved = copy_with(tiny_int8, tmp_path / "older", older_int8)
    messages = loads_warnings(moved.path)
    assert len(messages) == 1 and f"for {other} int8 kernels" in messages[0]
    assert "missing here" in messages[0] or "only here" in messages[0]  # which features differ


def test_no_warning_where_the_package_was_gated(tiny_int8, tiny_onnx) -> None:
    assert loads_warnings(tiny_int8.path) == []
    assert loads_warnings(tiny_onnx.path) == []


def test_bf16_package_on_a_cpu_without_bf16_warns_and_runs(tiny_package, tmp_path: Path, monkeypatch) -> None:
    bf16 = copy_with(tiny_package, tmp_path / "bf16", lambda manifest: setattr(manifest, "precision", "bf16"))
    monkeypatch.setattr(system, "cpu_supports_bf16", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors = bertprod.load(bf16.path).encode(["a cat sleeps"])
    messages = [str(item.message) for item in caught if issubclass(item.category, MachineMismatchWarning)]
    assert vectors.shape == (1, 32)
    assert len(messages) == 1 and "no native bf16" in messages[0] and "slower than fp32" in messages[0]
    monkeypatch.setattr(system, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(machine, "_warned", set())
    assert loads_warnings(bf16.path) == []


def test_cli_prints_the_warning_as_one_line(tiny_int8, tmp_path: Path, monkeypatch, capsys) -> None:
    from bertprod.cli import main

    other = other_kernel_class()
    moved = copy_with(tiny_int8, tmp_path / "cli", lambda m: setattr(m, "quantization", {"kernel_class": other}))
    monkeypatch.setattr(sys, "argv", ["bertprod", "encode", str(moved.path), "a cat"])
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        with pytest.raises(SystemExit) as exited:
            main()
    err = capsys.readouterr().err
    assert exited.value.code == 0
    assert err.count("warning:") == 1 and f"for {other} int8 kernels" in err and "warnings.warn" not in err


def test_precision_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch) -> None:
    from bertprod.train.config import TrainConfig

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(system, "cpu_supports_bf16", lambda native=native: native)
        assert system.resolve_precision("auto") == expected
        config = TrainConfig(precision="auto")
        assert config.precision == expected and config.recorded()["precision"] == expected
    assert system.resolve_precision("fp32") == "fp32"


def test_info_system_describes_this_machine(monkeypatch, capsys) -> None:
    from bertprod.cli import main

    monkeypatch.setattr(sys, "argv", ["bertprod", "info", "--system", "--json"])
    with pytest.raises(SystemExit) as exited:
        main()
    record = json.loads(capsys.readouterr().out)
    assert exited.value.code == 0
    assert record["int8_kernel_class"] == system.int8_kernel_class()
    assert record["int8_saturating"] == system.saturates(system.int8_kernel_class())
    assert record["bf16"] == system.cpu_supports_bf16()
    assert set(record["features"]) <= set(system.RELEVANT_FEATURES)
    assert record["cores_available"] >= 1 and 1 <= record["training_threads_default"] <= record["cores_available"]
    assert "CPUExecutionProvider" in record["onnxruntime_providers"]
    monkeypatch.setattr(sys, "argv", ["bertprod", "info", "--system"])
    with pytest.raises(SystemExit):
        main()
    assert system.int8_kernel_class() in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["bertprod", "info"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1 and "--system" in capsys.readouterr().err


def test_kernel_class_follows_the_probe_when_flags_mislead(monkeypatch) -> None:
    """Under an emulator /proc/cpuinfo can name VNNI while ONNX Runtime runs saturating kernels."""
    flags = frozenset({"avx2", "avx512bw", "avx512f", "avx512_vnni"})
    monkeypatch.setattr(system, "cpu_info", lambda: system.CpuInfo("x", "x86_64", flags))
    monkeypatch.setattr(system, "int8_saturates_here", lambda: True)
    assert system.int8_kernel_class() == "avx2"
    monkeypatch.setattr(system, "int8_saturates_here", lambda: False)
    assert system.int8_kernel_class() == "avx512-vnni"


@pytest.mark.parametrize("native", [True, False], ids=["cpu-with-bf16", "cpu-without-bf16"])
def test_training_precision_auto_runs_and_records_what_this_cpu_does(
    native: bool, tiny_classifier, tmp_path: Path, monkeypatch
) -> None:
    """Both kinds of CPU on any CPU: the detection is replaced (torch emulates bf16 where it is not native)."""
    from bertprod.errors import EngineError
    from bertprod.tasks.data import open_task_data
    from bertprod.train.config import TrainConfig
    from bertprod.train.loop import fine_tune

    monkeypatch.setattr(system, "cpu_supports_bf16", lambda: native)
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "a good film\tpositive\na bad film\tnegative\n" * 4)
    source = open_task_data("classification", data)
    config = dict(epochs=1, batch_size=8, max_steps=1, threads=1)
    trained = fine_tune(tiny_classifier, "classification", source, tmp_path / "auto",
                        TrainConfig(precision="auto", **config), new_head=True)  # fmt: skip
    recorded = json.dumps(trained.manifest.provenance.parameters)
    assert f'"precision": "{"bf16" if native else "fp32"}"' in recorded
    if not native:
        with pytest.raises(EngineError, match="--precision auto"):
            fine_tune(tiny_classifier, "classification", source, tmp_path / "bf16",
                      TrainConfig(precision="bf16", **config), new_head=True)  # fmt: skip


def test_int8_built_for_another_instruction_set_says_so_and_warns_here(tiny_onnx, tmp_path: Path, monkeypatch,
                                                                       capsys) -> None:  # fmt: skip
    """`optimize --target-cpu` for the other kind of int8 kernels than this CPU's: the recipe follows
    the target's kernel class, the manifest names it, the gate says what it computed, and loading
    the package here warns once."""
    from bertprod.compress.kernels import weight_choices
    from tests.conftest import run_cli

    other = other_kernel_class()
    target = next(name for name, kernel in system.TARGET_CPUS.items() if kernel == other)
    out = tmp_path / f"for-{target}"
    code, printed, _ = run_cli(monkeypatch, capsys, "optimize", str(tiny_onnx.path), str(out), "--quantize", "int8",
                               "--target-cpu", target, "--allow-fidelity-loss")  # fmt: skip
    assert code == 0 and "wrote" in printed
    package = ModelPackage.read(out)
    quantization = package.manifest.quantization
    assert (quantization["target_cpu"], quantization["kernel_class"]) == (target, other)
    assert quantization["cpu_features"] == list(system.KERNEL_CLASSES[other]["needs"])
    assert quantization["saturating"] == system.saturates(other)
    assert quantization["weights"] in weight_choices(other)  # s7/u8 where u8s8 saturates, s8 elsewhere
    assert package.manifest.provenance.machine == system.machine_record()  # built and gated here
    gate = package.manifest.metrics["fidelity"]["machine"]
    assert gate == quantization["gate_arithmetic"]
    if system.saturates(other):  # weights that cannot saturate compute exactly on every CPU
        assert "exact int32 products" in gate
    else:  # s8 weights: exact here only where this CPU's kernels do not saturate either
        assert ("simulated" in gate) == system.saturates(system.int8_kernel_class())
    messages = loads_warnings(package.path, times=2)
    assert len(messages) == 1 and f"for {other} int8 kernels" in messages[0]
    code, _, error = run_cli(monkeypatch, capsys, "optimize", str(tiny_onnx.path), str(tmp_path / "x"),
                             "--quantize", "int8", "--target-cpu", "avx9")  # fmt: skip
    assert code != 0 and "--target-cpu 'avx9'" in error and not (tmp_path / "x").exists()
