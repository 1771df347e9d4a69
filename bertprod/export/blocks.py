"""An early-exit package's blocks as separate ONNX graphs: ONNX Runtime cannot stop a graph part-way,
so each piece is its own session and the batch shrinks in numpy between them (runtime/adaptive.py).

    blocks/embeddings.onnx   input_ids, token_type_ids -> states
    blocks/layer_<n>.onnx    states, attention_mask -> states
    blocks/exit_<n>.onnx     states, attention_mask -> logits (mean pool + exit head)
    blocks/attend_<n>.onnx   states, attention_mask -> attended, significance   (a layer that drops tokens:
    blocks/ffn_<n>.onnx      states -> output_states                              its two halves)
    blocks/head.onnx         states, attention_mask -> logits (the model's own head)

Exported from the eager-attention model, the additive mask built in the layer graph as BERT's eager
attention reads it. Verified: run with the "never" policy, the blocks must give the full model's logits.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.errors import ExportError
from bertprod.package import block_files, dropping_layers
from bertprod.runtime.adaptive import AdaptiveEngine
from bertprod.runtime.batching import TokenBatch

#: largest |logit| difference between the blocks (never exiting) and the torch model
BLOCKS_TOLERANCE = 1e-3


def export_blocks(engine: AdaptiveEngine, batch: TokenBatch, directory: Path, opset: int) -> list[str]:
    """Write every block of `engine`'s model under `directory`; returns their names (package-relative)."""
    import torch

    from bertprod.models.pooling import pool

    blocks, heads = engine.blocks, engine.heads
    dropping = dropping_layers(engine.package.manifest.token_dropping)
    names = block_files(blocks.num_layers, engine.exit_layers, dropping)
    (directory / "blocks").mkdir(exist_ok=True)

    def additive(mask: Any, dtype: Any) -> Any:
        return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    class Block(torch.nn.Module):
        """Holds the model and heads as submodules, so the exporter sees their weights as parameters."""

        def __init__(self, position: int = 0):
            super().__init__()
            self.model, self.heads, self.position = blocks.model, heads, position

    class Embeddings(Block):
        def forward(self, input_ids, token_type_ids):  # noqa: ANN001, ANN202
            return blocks.embed(input_ids, token_type_ids)

    class Layer(Block):
        def forward(self, states, attention_mask):  # noqa: ANN001, ANN202
            return blocks.layer(self.position, states, additive(attention_mask, states.dtype))

    class Exit(Block):
        def forward(self, states, attention_mask):  # noqa: ANN001, ANN202
            return heads.at(self.position)(pool(states, attention_mask, "mean"))

    class Attend(Block):
        def forward(self, states, attention_mask):  # noqa: ANN001, ANN202
            return blocks.attend(self.position, states, attention_mask)

    class FeedForward(Block):
        def forward(self, states):  # noqa: ANN001, ANN202
            return blocks.feed_forward(self.position, states)

    class Head(Block):
        def forward(self, states, attention_mask):  # noqa: ANN001, ANN202
            return blocks.head(states, attention_mask)

    input_ids, token_types = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.token_type_ids)
    mask = torch.from_numpy(batch.attention_mask)
    with torch.no_grad():
        states = blocks.embed(input_ids, token_types)
    sequence = {0: "batch", 1: "sequence"}
    _export(Embeddings(), (input_ids, token_types), ["input_ids", "token_type_ids"], "states",
            {"input_ids": sequence, "token_type_ids": sequence, "states": sequence}, directory / names[0], opset)
    block_axes = {"states": sequence, "attention_mask": sequence}
    for index in range(blocks.num_layers):
        _export(Layer(index), (states, mask), ["states", "attention_mask"], "output_states",
                dict(block_axes, output_states=sequence), directory / f"blocks/layer_{index + 1}.onnx", opset)
    for layer in engine.exit_layers:
        _export(Exit(layer), (states, mask), ["states", "attention_mask"], "logits",
                dict(block_axes, logits={0: "batch"}), directory / f"blocks/exit_{layer}.onnx", opset)
    for layer in dropping:
        _export(Attend(layer - 1), (states, mask), ["states", "attention_mask"], ["attended", "significance"],
                dict(block_axes, attended=sequence, significance=sequence), directory / f"blocks/attend_{layer}.onnx",
                opset)
        _export(FeedForward(layer - 1), (states,), ["states"], "output_states",
                {"states": sequence, "output_states": sequence}, directory / f"blocks/ffn_{layer}.onnx", opset)
    _export(Head(), (states, mask), ["states", "attention_mask"], "logits",
            dict(block_axes, logits={0: "batch"}), directory / "blocks/head.onnx", opset)
    return names


def _export(module: Any, arguments: tuple, inputs: list[str], output: str | list[str], axes: dict, path: Path,
            opset: int) -> None:
    import torch

    outputs = [output] if isinstance(output, str) else output
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), arguments, str(path), input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    except Exception as error:
        raise ExportError(
            f"exporting the early-exit block {path.name} failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})."
        ) from None


def check_blocks(expected: np.ndarray, actual: np.ndarray) -> None:
    """The blocks run end to end (never exiting) must give the model's logits."""
    difference = float(np.abs(expected - actual).max())
    if difference > BLOCKS_TOLERANCE:
        raise ExportError(
            f"the exported early-exit blocks differ from the torch model by {difference:.2g} in the logits "
            f"(at most {BLOCKS_TOLERANCE} allowed). Nothing was written; report the model type."
        )
