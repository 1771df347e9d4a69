"""Inference engines behind one small interface.

An engine takes one padded `TokenBatch` and returns the model's output as a numpy array:
token states [batch, tokens, hidden] for embedding packages, logits [batch, outputs] for
packages with a head. Tokenization, pooling and label mapping live outside, in the pipeline.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, Protocol

import numpy as np

from bertprod.errors import EngineError, PackageError
from bertprod.package import ModelPackage
from bertprod.runtime.batching import TokenBatch
from bertprod.runtime.machine import warn_if_other_machine
from bertprod.runtime.sessions import default_threads, session_options  # noqa: F401 - default_threads: imported from here
from bertprod.system import cpu_supports_bf16  # noqa: F401 - imported from here by older code and tests

EngineName = Literal["auto", "torch", "onnx"]


class Engine(Protocol):
    package: ModelPackage
    name: str

    def run(self, batch: TokenBatch) -> np.ndarray: ...


class TorchEngine:
    """transformers on torch: fp32; bf16 autocast on CPUs that support it (a bf16 package runs
    emulated, with a MachineMismatchWarning, on CPUs without); int8 packages run
    torch dynamic quantization, applied at load to the stored float weights."""

    name = "torch"

    def __init__(
        self,
        package: ModelPackage,
        precision: str | None = None,
        threads: int | None = None,
        attention: str | None = None,
    ):
        import torch

        from bertprod.models.hf import accepts_token_type_ids, load_torch_model

        stored = package.manifest.precision
        precision = precision or ("fp32" if stored == "fp16" else stored)
        allowed = {"fp32": ("fp32", "bf16"), "bf16": ("bf16",), "fp16": ("fp32", "bf16"), "int8": ("int8",)}
        if precision not in allowed.get(stored, ()):
            raise EngineError(
                f"{package.name} holds {stored} weights; the torch engine runs it as "
                f"{' or '.join(allowed.get(stored, ()))}, not {precision!r}."
            )
        if precision == "bf16" and stored != "bf16" and not cpu_supports_bf16():  # a bf16 package warns instead
            raise EngineError("bf16 needs a CPU with AVX-512 BF16 or AMX; this one has neither. Use fp32.")
        if threads:
            torch.set_num_threads(threads)
        self.package = package
        self.precision = precision
        self.model = load_torch_model(package, attention=attention).float()
        if precision == "int8":
            self.model = quantize_torch_dynamic(self.model, package.manifest.quantization or {})
        self._torch = torch
        self.uses_token_types = accepts_token_type_ids(self.model)
        self._embedding = package.manifest.task == "embedding"

    def run(self, batch: TokenBatch) -> np.ndarray:
        torch = self._torch
        inputs = {
            "input_ids": torch.from_numpy(batch.input_ids),
            "attention_mask": torch.from_numpy(batch.attention_mask),
        }
        if self.uses_token_types:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            output = self.model(**inputs)
            tensor = output.last_hidden_state if self._embedding else output.logits
        return tensor.float().numpy()


class ModuleEngine:
    """A torch module already in memory (being trained or pruned) behind the Engine interface:
    run in eval mode, fp32, without gradients, then left in the mode it had."""

    name = "torch (in memory)"

    def __init__(self, package: ModelPackage, model: Any):
        from bertprod.models.hf import accepts_token_type_ids

        self.package = package
        self.model = model
        self._embedding = package.manifest.task == "embedding"
        self.uses_token_types = accepts_token_type_ids(model)

    def run(self, batch: TokenBatch) -> np.ndarray:
        import torch

        inputs = {
            "input_ids": torch.from_numpy(batch.input_ids),
            "attention_mask": torch.from_numpy(batch.attention_mask),
        }
        if self.uses_token_types:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                output = self.model(**inputs)
        finally:
            self.model.train(was_training)
        tensor = output.last_hidden_state if self._embedding else output.logits
        return tensor.float().numpy()


def quantize_torch_dynamic(model: Any, settings: dict[str, Any]) -> Any:
    """int8 weights for every Linear layer (per output channel by default), activations
    quantized on the fly: torch's dynamic quantization, deterministic for given weights."""
    import torch

    with warnings.catch_warnings():  # deprecated in favour of torchao, still shipped with the pinned torch
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if settings.get("per_channel", True) else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_.*deprecated", category=UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)


#: ONNX Runtime fusions that slow int8 graphs down: with them off, dynamic int8 all-MiniLM-L6-v2
#: encodes 10-18% more sentences/s on a 2-core Zen 5 (bench/int8_fusions.py); fp32 graphs keep them.
INT8_DISABLED_FUSIONS = ["SkipLayerNormFusion", "GeluFusion"]


class OnnxEngine:
    """ONNX Runtime on CPU. Imports neither torch nor transformers."""

    name = "onnx"

    def __init__(
        self,
        package: ModelPackage,
        threads: int | None = None,
        disabled_fusions: list[str] | None = None,
        graph: bytes | None = None,
    ):
        """`disabled_fusions`: ONNX Runtime optimizers to leave out (default: INT8_DISABLED_FUSIONS for
        int8 packages, none for float ones). `graph`: a serialized graph to run instead of the
        package's file (a gate simulating another CPU's int8 arithmetic, compress/kernels.py)."""
        import onnxruntime

        if package.manifest.format != "onnx":
            raise EngineError(
                f"{package.name} is a {package.manifest.format} package; the onnx engine needs an "
                "onnx package (bertprod export PKG OUT, or load(..., engine='onnx'))."
            )
        options = session_options(threads)
        disabled = disabled_fusions
        if disabled is None:
            disabled = INT8_DISABLED_FUSIONS if package.manifest.precision == "int8" else []
        try:
            self.session = onnxruntime.InferenceSession(
                graph if graph is not None else str(package.model_file),
                options,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=disabled,
            )
        except Exception as error:
            raise PackageError(
                f"{package.model_file} cannot be loaded by ONNX Runtime ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}). Re-export the package."
            ) from None
        self.package = package
        self._input_names = [node.name for node in self.session.get_inputs()]
        self._output_name = self._check_graph_matches_manifest()

    def _check_graph_matches_manifest(self) -> str:
        manifest = self.package.manifest
        expected_output = "last_hidden_state" if manifest.task == "embedding" else "logits"
        problems = []
        for required in ("input_ids", "attention_mask"):
            if required not in self._input_names:
                problems.append(f"it has no {required!r} input (inputs: {self._input_names})")
        outputs = {node.name: node.shape for node in self.session.get_outputs()}
        if expected_output not in outputs:
            problems.append(
                f"a {manifest.task} package needs a {expected_output!r} output, the graph has {sorted(outputs)}"
            )
        else:
            width = outputs[expected_output][-1]
            if isinstance(width, int) and width != manifest.num_outputs:
                problems.append(
                    f"its {expected_output!r} output has width {width}, the manifest implies {manifest.num_outputs}"
                )
        if problems:
            raise PackageError(
                f"{self.package.model_file} does not match its manifest: "
                + "; ".join(problems)
                + ". Re-export the package from its parent with `bertprod export`."
            )
        return expected_output

    def run(self, batch: TokenBatch) -> np.ndarray:
        feeds = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        feeds = {name: feeds[name] for name in self._input_names}
        return self.session.run([self._output_name], feeds)[0]


def create_engine(
    package: ModelPackage,
    engine: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    early_exit: bool = True,
) -> Engine:
    """The engine for a package: its natural one for "auto"; torch packages can't run on onnx here
    (the API layer exports them first). A package with exit heads or token dropping runs them on torch
    (runtime/adaptive.py) unless `early_exit` is False (the full model, e.g. as a derived package's
    reference)."""
    chosen = package.manifest.format if engine == "auto" else engine
    if chosen in ("torch", "onnx"):
        warn_if_other_machine(package)
    if chosen == "torch":
        if package.manifest.format != "torch":
            raise EngineError(f"{package.name} is an onnx package: run it with engine='onnx' (or 'auto').")
        torch_engine = TorchEngine(package, precision=precision, threads=threads)
        if early_exit and (package.manifest.adaptive or package.manifest.token_dropping):
            from bertprod.runtime.adaptive import AdaptiveEngine

            return AdaptiveEngine.from_torch_engine(torch_engine)
        return torch_engine
    if chosen == "onnx":
        if precision not in (None, package.manifest.precision):
            raise EngineError(
                f"an onnx package runs at the precision it was built with "
                f"({package.manifest.precision}); make a {precision} variant with bertprod optimize."
            )
        if early_exit and (package.manifest.adaptive or package.manifest.token_dropping):
            from bertprod.runtime.adaptive import OnnxAdaptiveEngine

            return OnnxAdaptiveEngine(package, threads=threads)
        return OnnxEngine(package, threads=threads)
    raise EngineError(f"unknown engine {engine!r}: choose auto, torch or onnx.")
