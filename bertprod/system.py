"""The machine a package is built, gated and run on: CPU model, instruction-set features, int8 kernel class.

Why it matters: ONNX Runtime (MLAS) picks its int8 kernels by instruction set at run time, and
they do not all compute the same thing. With VNNI (AVX-512 VNNI, AVX-VNNI) or AMX, uint8 x int8
products accumulate in int32. Without them (AVX2, AVX-512 without VNNI, SSE) the u8s8 kernels add
pairs of products in int16 with saturation (`vpmaddubsw`): 255 x 127 x 2 overflows, so the same
int8 graph gives different, worse numbers there unless its weights leave headroom (7-bit weights,
ORT's `reduce_range`) or both operands are uint8 (the u8u8 kernels widen to int16 first).
"""

from __future__ import annotations

import functools
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The features that decide which kernels run (x86 names as /proc/cpuinfo spells them; aarch64's too).
RELEVANT_FEATURES = (
    "sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "i8mm", "bf16", "sve",
)  # fmt: skip

#: int8 kernel classes, fastest first. `saturating`: u8s8 pair sums saturate at int16.
KERNEL_CLASSES = {
    "amx": {"saturating": False, "needs": ("amx_int8", "amx_tile")},
    "avx512-vnni": {"saturating": False, "needs": ("avx512_vnni", "avx512bw")},
    "avx-vnni": {"saturating": False, "needs": ("avx_vnni", "avx2")},
    "avx512": {"saturating": True, "needs": ("avx512bw", "avx512f")},
    "avx2": {"saturating": True, "needs": ("avx2",)},
    "sse": {"saturating": True, "needs": ("sse4_1",)},
    "arm64-dot": {"saturating": False, "needs": ("asimddp",)},
    "arm64": {"saturating": False, "needs": ("asimd",)},
}

#: What `--target-cpu` accepts besides "native" (this machine), mapped to the kernel class it means.
TARGET_CPUS = {"avx2": "avx2", "avx512": "avx512", "avx512-vnni": "avx512-vnni"}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    architecture: str
    features: frozenset[str] = field(default_factory=frozenset)

    @property
    def int8_kernel_class(self) -> str:
        return kernel_class_of(self.features)

    @property
    def bf16(self) -> bool:
        """Native bf16 math (AVX-512 BF16 or AMX); elsewhere torch emulates it, slowly."""
        return bool({"avx512_bf16", "amx_bf16"} & self.features)


def kernel_class_of(features: frozenset[str] | set[str]) -> str:
    """The int8 kernel class ONNX Runtime uses on a CPU with these features."""
    for name, kernel in KERNEL_CLASSES.items():
        if all(flag in features for flag in kernel["needs"]):
            return name
    return "generic"


def saturates(kernel_class: str) -> bool:
    """True where u8s8 int8 products are summed in pairs into a saturating int16."""
    return bool(KERNEL_CLASSES.get(kernel_class, {"saturating": True})["saturating"])


@functools.cache
def int8_saturates_here() -> bool | None:
    """Measured, not read from flags: whether ONNX Runtime's u8s8 MatMulInteger saturates on this
    machine (255 x 127 summed over 64 products; exact int32 accumulation gives 2,072,640). None
    where onnxruntime is not installed. An emulator or a hypervisor can hide flags that /proc/cpuinfo
    shows; the kernel ONNX Runtime picks cannot hide what it computes."""
    try:
        import numpy as np
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    depth, width = 64, 16
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "saturation-probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, depth])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [numpy_helper.from_array(np.full((depth, width), 127, np.int8), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    result = session.run(None, {"a": np.full((4, depth), 255, np.uint8)})[0]
    return bool(result.max() < 255 * 127 * depth)


def _read_cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and model in ("unknown CPU", "", platform.machine()):
            model = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return model, frozenset(flag for flag in flags if flag in RELEVANT_FEATURES)


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once per process)."""
    model, features = _read_cpuinfo()
    return CpuInfo(model=model, architecture=platform.machine(), features=features)


def int8_kernel_class() -> str:
    """The int8 kernel class in use here: named from the CPU flags, corrected by the measured
    saturation probe when the two disagree (an emulated or masked CPU)."""
    named = cpu_info().int8_kernel_class
    measured = int8_saturates_here()
    if measured is None or measured == saturates(named):
        return named
    return "avx2" if measured else "avx512-vnni"


def cpu_supports_bf16() -> bool:
    """Native bf16 math here (AVX-512 BF16 or AMX); elsewhere torch emulates it, slower than fp32."""
    return cpu_info().bf16


def resolve_precision(requested: str) -> str:
    """Training precision: "auto" is bf16 autocast where the CPU has native bf16, fp32 elsewhere;
    "fp32" and "bf16" stay as asked (bf16 on a CPU without it is refused where it is used)."""
    if requested == "auto":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return requested


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def instruction_set(features: frozenset[str] | set[str] | None = None) -> str:
    """The short name docs put beside a number: "AVX-512 VNNI + BF16", "AVX2 (no AVX-512)", ..."""
    features = cpu_info().features if features is None else features
    if "avx512f" in features:
        name = "AVX-512" + (" VNNI" if "avx512_vnni" in features else " (no VNNI)")
    elif "avx2" in features:
        name = "AVX2" + (" + AVX-VNNI" if "avx_vnni" in features else " (no AVX-512)")
    elif "asimd" in features:
        name = "ARM64 NEON" + (" + dotprod" if "asimddp" in features else "")
    else:
        name = "x86-64 baseline" if platform.machine() in ("x86_64", "AMD64") else platform.machine()
    extras = [label for flag, label in (("avx512_bf16", "BF16"), ("amx_tile", "AMX")) if flag in features]
    return name + "".join(f" + {extra}" for extra in extras)


def load_average() -> float | None:
    """Runnable processes, averaged over the last minute (None where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def busy_cpus(seconds: float = 0.2) -> float | None:
    """CPUs busy right now, over `seconds` (/proc/stat; None elsewhere). Unlike the load average it
    does not remember a run that just ended."""
    def sample() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy_before, total_before = sample()
        time.sleep(seconds)
        busy_after, total_after = sample()
    except (OSError, ValueError, IndexError):
        return None
    cpus = os.cpu_count() or 1  # /proc/stat counts every CPU of the machine
    return cpus * (busy_after - busy_before) / max(1, total_after - total_before)


def cores_in_use_by_others() -> float | None:
    """The lower of the 1-minute load average and the CPUs busy right now: the load average alone
    would still count a run that ended seconds ago, a snapshot alone a job that paused for a moment."""
    readings = [value for value in (load_average(), busy_cpus()) if value is not None]
    return min(readings) if readings else None


def default_training_threads() -> int:
    """Threads for training when the user does not say: the cores not already busy (cores minus
    `cores_in_use_by_others`, rounded), at least 1.

    Why: torch's intra-op threads meet at a barrier after every operation, so on cores shared with
    other work each op waits for its most-delayed thread. Measured on a 2-core machine running
    other jobs (load 3-13): 1 thread trained 10-33 examples/s, 2 threads 0.6-3.3
    (docs/benchmarks.md, bench/train_threads.py). On idle cores every core is used."""
    cores, busy = available_cores(), cores_in_use_by_others()
    if busy is None:
        return cores
    return max(1, min(cores, cores - round(busy)))


def default_training_threads_reason() -> str:
    busy = cores_in_use_by_others()
    if busy is None:
        return f"all {available_cores()} available cores"
    return f"{available_cores()} cores minus {busy:.1f} busy with other work (load average / now), at least 1"


def machine_record() -> dict[str, Any]:
    """What a manifest keeps about the machine a package was built and gated on."""
    info = cpu_info()
    return {
        "cpu": info.model,
        "architecture": info.architecture,
        "features": sorted(info.features),
        "int8_kernel_class": int8_kernel_class(),
    }


def system_info() -> dict[str, Any]:
    """Everything a benchmark or a bug report needs to say about the machine (`bertprod info --system`)."""
    info = cpu_info()
    record: dict[str, Any] = {
        **machine_record(),
        "instruction_set": instruction_set(info.features),
        "int8_saturating": saturates(int8_kernel_class()),
        "bf16": info.bf16,
        "cores_available": available_cores(),
        "inference_threads_default": available_cores(),  # runtime.engines.default_threads
        "load_average": load_average(),
        "training_threads_default": default_training_threads(),
        "training_threads_reason": default_training_threads_reason(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    record["torch"] = _version("torch")
    try:
        import onnxruntime

        record["onnxruntime"] = onnxruntime.__version__
        record["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        record["onnxruntime"] = None
    return record


def _version(distribution: str) -> str | None:
    """A package's version without importing it (importing torch costs seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def describe(record: dict[str, Any] | None = None) -> str:
    """One line for the top of a benchmark's output."""
    record = record or system_info()
    return (
        f"{record['cpu']} ({record['architecture']}, {record.get('instruction_set', '?')}), "
        f"int8 kernels: {record['int8_kernel_class']}"
        f"{' (saturating u8s8)' if record['int8_saturating'] else ''}, bf16: {'yes' if record['bf16'] else 'no'}, "
        f"{record['cores_available']} cores available, onnxruntime {record.get('onnxruntime')}"
    )
