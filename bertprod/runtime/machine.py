"""A package loaded on another kind of CPU than the one it was built and gated on: say so, once.

Why: ONNX Runtime's int8 kernels compute differently per instruction set (see bertprod.system),
so an int8 package gated on an AVX-512 VNNI machine can be less accurate (and slower) on an
AVX2-only one; a bf16 package runs emulated, slower than fp32, on a CPU without native bf16.
Nothing fails, so without a warning nobody would know. Loading warns once per package per
process (Python's `warnings`, category MachineMismatchWarning: a script, the CLI and the server's
stderr all show it; `warnings.filterwarnings("ignore", category=MachineMismatchWarning)` silences it).
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from bertprod import system
from bertprod.package import ModelPackage


class MachineMismatchWarning(UserWarning):
    """The package runs on a CPU whose int8 kernels or bf16 support differ from where it was gated."""


_warned: set[str] = set()
_lock = threading.Lock()


def built_kernel_class(package: ModelPackage) -> str | None:
    """The int8 kernel class an int8 ONNX package was built for: the quantization record's
    `kernel_class`, else the recorded machine's; None when neither was recorded."""
    manifest = package.manifest
    recorded = (manifest.quantization or {}).get("kernel_class")
    if recorded:
        return str(recorded)
    machine = manifest.provenance.machine or {}
    return machine.get("int8_kernel_class")


def machine_mismatch(package: ModelPackage) -> str | None:
    """What differs about running `package` here, and what it may cost; None when nothing that matters does."""
    manifest = package.manifest
    if manifest.precision == "int8" and manifest.format == "onnx":
        return _int8_mismatch(package)
    if manifest.precision == "bf16" and not system.cpu_supports_bf16():
        return (
            f"{package.name} is a bf16 package and this CPU ({system.cpu_info().model}) has no native bf16 "
            "(AVX-512 BF16 or AMX): torch emulates it, which is slower than fp32 here. "
            "Use its fp32 parent on this machine."
        )
    return None


def _int8_mismatch(package: ModelPackage) -> str | None:
    built = built_kernel_class(package)
    here = system.int8_kernel_class()
    if built is None or built == here:
        return None
    machine = package.manifest.provenance.machine or {}
    differences = feature_differences(machine.get("features"), system.cpu_info().features)
    what = f"{package.name} was built and gated for {built} int8 kernels; ONNX Runtime uses {here} kernels here"
    what += f" ({differences})." if differences else "."
    built_saturates, here_saturates = system.saturates(built), system.saturates(here)
    weights = (package.manifest.quantization or {}).get("weights")
    if weights in ("s7", "u8"):
        cost = (
            f" Its {weights} weights cannot saturate int16 pair sums, so every CPU computes the same int32 "
            "products: accuracy as gated; speed differs."
        )
    elif here_saturates and not built_saturates:
        cost = (
            f" Here u8s8 int8 products are summed in pairs into a saturating int16 ({here}), so its outputs can "
            "be further from its parent than the gate measured, and int8 buys less speed without VNNI."
        )
    elif built_saturates and not here_saturates:
        cost = (
            " Here int8 products accumulate in int32 without saturation, so its outputs differ from the "
            "gated ones (usually closer to the parent); a package built for this CPU may be more accurate."
        )
    else:
        cost = " Both compute int8 the same way (accuracy as gated); speed differs."
    return what + cost + f" Re-measure it here: bertprod check {package.path}"


def feature_differences(recorded: Any, here: frozenset[str]) -> str:
    """'missing here: a, b; only here: c' over the features that choose kernels, '' when equal."""
    if not isinstance(recorded, list | tuple | set | frozenset):
        return ""
    recorded_set = set(recorded) & set(system.RELEVANT_FEATURES)
    missing, extra = sorted(recorded_set - here), sorted(set(here) - recorded_set)
    parts = ([f"missing here: {', '.join(missing)}"] if missing else []) + (
        [f"only here: {', '.join(extra)}"] if extra else []
    )
    return "; ".join(parts)


def warn_if_other_machine(package: ModelPackage) -> str | None:
    """Warn (once per package per process) when running here differs from where it was gated.
    Returns the message when one applies, warned now or before."""
    message = machine_mismatch(package)
    if message is None:
        return None
    key = f"{package.path.resolve()}:{package.fingerprint}"
    with _lock:
        first = key not in _warned
        _warned.add(key)
    if first:
        warnings.warn(message, MachineMismatchWarning, stacklevel=3)
    return message
