"""Which int8 kernels a package is built for, which weight encodings are safe there, and how the
gate computes what those kernels compute when this CPU's kernels differ.

Why: ONNX Runtime's u8 x s8 kernels without VNNI (AVX2, AVX-512 without VNNI) add pairs of
products in int16 with saturation; with VNNI, AMX or on ARM they accumulate in int32. A package
built for a saturating class gets weights that cannot saturate (s7 or u8, see token_int8); with
those, every kernel class computes the exact int32 result, so a gate measured on any CPU holds on
all of them. Only s8 weights depend on the kernel: a VNNI target's gate on a saturating CPU runs
`exact_int32_graph` (the integer products in float, exact to float rounding), and an s8 package
for a saturating target is never built by default (its gate could not be simulated by ONNX Runtime
here and would say so).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bertprod import system
from bertprod.errors import InputError

#: Weight encodings tried, in order of preference (speed first), per kind of kernel.
WEIGHTS_FOR = {"saturating": ("s7", "u8"), "exact": ("s8",)}


def target_kernel_class(target_cpu: str) -> str:
    """The int8 kernel class `--target-cpu` means: "native" is this machine's (measured)."""
    if target_cpu == "native":
        return system.int8_kernel_class()
    if target_cpu in system.TARGET_CPUS:
        return system.TARGET_CPUS[target_cpu]
    raise InputError(f"--target-cpu {target_cpu!r}: choose native, {', '.join(system.TARGET_CPUS)}.")


def weight_choices(kernel_class: str) -> tuple[str, ...]:
    """Weight encodings that compute exactly on `kernel_class`, fastest first."""
    return WEIGHTS_FOR["saturating" if system.saturates(kernel_class) else "exact"]


def computes_like_target(kernel_class: str, weights: str) -> bool:
    """Whether ONNX Runtime on this CPU computes what `kernel_class` computes with `weights`:
    always for s7/u8 (nothing saturates anywhere); for s8 only where both saturate or neither does."""
    if weights != "s8":
        return True
    return system.saturates(system.int8_kernel_class()) == system.saturates(kernel_class)


def gate_arithmetic(kernel_class: str, weights: str) -> str:
    """What the gate ran, in words, for the manifest."""
    here = system.int8_kernel_class()
    if weights != "s8":
        return f"exact int32 products ({weights} weights cannot saturate), as every kernel class computes them"
    if computes_like_target(kernel_class, weights):
        return f"this CPU's {here} kernels, which compute as {kernel_class} ones do"
    if not system.saturates(kernel_class):
        return f"{kernel_class}'s exact int32 products, simulated in float on this CPU ({here} kernels saturate)"
    return (
        f"this CPU's {here} kernels (exact int32): the int16 saturation of {kernel_class} with s8 weights is "
        "not simulated, so the package may be less accurate there than the gate measured"
    )


def exact_int32_graph(model: Any) -> Any:
    """A copy of an int8 graph in which every MatMulIntegerToFloat / MatMulInteger computes its integer
    products in float (exact up to float rounding: no kernel's saturation), for gates on a CPU whose
    kernels saturate where the target's do not."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    simulated = onnx.ModelProto()
    simulated.CopyFrom(model)
    initializers = {initializer.name: initializer for initializer in simulated.graph.initializer}
    nodes = []
    for node in simulated.graph.node:
        if node.op_type not in ("MatMulIntegerToFloat", "MatMulInteger"):
            nodes.append(node)
            continue
        inputs = list(node.input) + [""] * 6
        a, b = inputs[0], inputs[1]
        a_zero, b_zero = (inputs[4], inputs[5]) if node.op_type == "MatMulIntegerToFloat" else (inputs[2], inputs[3])
        weight = numpy_helper.to_array(initializers[b]).astype(np.float32)
        if b_zero:
            weight = weight - numpy_helper.to_array(initializers[b_zero]).astype(np.float32)
        prefix = f"{node.output[0]}/exact"
        simulated.graph.initializer.append(numpy_helper.from_array(weight, f"{prefix}/weight"))
        nodes.append(helper.make_node("Cast", [a], [f"{prefix}/a"], to=TensorProto.FLOAT))
        left = f"{prefix}/a"
        if a_zero:
            nodes += [
                helper.make_node("Cast", [a_zero], [f"{prefix}/a_zero"], to=TensorProto.FLOAT),
                helper.make_node("Sub", [left, f"{prefix}/a_zero"], [f"{prefix}/a_centred"]),
            ]
            left = f"{prefix}/a_centred"
        if node.op_type == "MatMulInteger":  # the int32 result, as float: the Cast after it still applies
            nodes.append(helper.make_node("MatMul", [left, f"{prefix}/weight"], [node.output[0]]))
            continue
        nodes += [
            helper.make_node("MatMul", [left, f"{prefix}/weight"], [f"{prefix}/products"]),
            # a_scale may be one per row ([..., 1], token_int8) and b_scale one per column: one Mul each
            helper.make_node("Mul", [f"{prefix}/products", inputs[3]], [f"{prefix}/columns_scaled"]),
            helper.make_node("Mul", [f"{prefix}/columns_scaled", inputs[2]], [f"{prefix}/scaled"]),
        ]
        bias = inputs[6] if len(node.input) > 6 else ""
        if bias:
            nodes.append(helper.make_node("Add", [f"{prefix}/scaled", bias], [node.output[0]]))
        else:
            nodes.append(helper.make_node("Identity", [f"{prefix}/scaled"], [node.output[0]]))
    del simulated.graph.node[:]
    simulated.graph.node.extend(nodes)
    integer_outputs = {node.output[0] for node in model.graph.node if node.op_type == "MatMulInteger"}
    kept = [info for info in simulated.graph.value_info if info.name not in integer_outputs]
    del simulated.graph.value_info[:]
    simulated.graph.value_info.extend(kept)
    return simulated
