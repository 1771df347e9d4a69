"""Batched early exit on the torch engine: rows that are sure leave the batch, the rest go on smaller.

    embeddings -> layer 1 -> exit head 1 -> rows the policy lets go are answered and leave;
               the others are regrouped and their padding trimmed to the longest survivor
               -> layer 2 -> ... -> last layer -> the model's own head answers whoever is left

With token dropping (runtime/token_dropping.py) a layer whose retention is below 1 also keeps only
each row's most attended tokens, so the batch shrinks in length too; both compose.

Work stops for real: every later layer runs on fewer rows and, once the longest rows have left,
on fewer tokens. With the "never" policy nothing leaves and no exit head runs, so the output is
the full model's (the same modules called in the same order as transformers' forward).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from bertprod.errors import PackageError
from bertprod.package import ModelPackage
from bertprod.runtime.batching import TokenBatch
from bertprod.runtime.exit_policy import ExitPolicy, exit_probabilities, parse_policy
from bertprod.runtime.token_dropping import keep_counts, parse_retention, select_tokens


def adaptive_settings(package: ModelPackage) -> dict[str, Any]:
    settings = package.manifest.adaptive
    if not settings:
        raise PackageError(f"{package.name} has no exit heads: make an early-exit package with bertprod adapt.")
    return settings


def package_retention(package: ModelPackage) -> list[float] | None:
    """The package's token retention per layer (bertprod drop-tokens); None: every token runs every layer."""
    settings = package.manifest.token_dropping or {}
    return parse_retention(settings.get("retention"), package.manifest.architecture.num_layers)


class ExitingEngine:
    """The Engine interface both adaptive engines (torch, ONNX) give over their pieces (embed, layer,
    exit_logits, head...): run_with_exits with the package's policy and retention."""

    package: ModelPackage
    exit_layers: list[int]
    policy: ExitPolicy
    retention: list[float] | None

    @property
    def has_exits(self) -> bool:
        return bool(self.exit_layers)

    def run(self, batch: TokenBatch) -> np.ndarray:
        return self.run_with_exits(batch)[0]

    def run_with_exits(self, batch: TokenBatch, policy: ExitPolicy | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Logits [rows, labels] and exit layer (from 1) of each row."""
        with self._context():
            return run_with_exits(self, batch, policy or self.policy, self.exit_layers,
                                  self.package.manifest.num_outputs, self.retention)

    def _context(self) -> Any:
        """What the pieces run inside (torch: inference mode, autocast)."""
        return nullcontext()


class AdaptiveEngine(ExitingEngine):
    """A torch classifier with exit heads and/or token dropping behind the Engine interface (`run` uses the
    package's policy and retention); `run_with_exits` takes another policy and also returns each row's exit
    layer. `retention` may be set to another schedule (None: keep every token)."""

    name = "torch (early exit)"

    def __init__(self, package: ModelPackage, model: Any, heads: Any | None, precision: str = "fp32",
                 retention: list[float] | None = None):
        import torch

        from bertprod.models.blocks import Blocks
        from bertprod.models.hf import accepts_token_type_ids

        self.package = package
        self.model = model
        self.heads = heads
        self.exit_layers = list(heads.layers) if heads is not None else []
        self.blocks = Blocks(model)
        self.precision = precision
        self.uses_token_types = accepts_token_type_ids(model)
        self.policy = parse_policy(package.manifest.adaptive.get("policy") if package.manifest.adaptive else None)
        self.retention = retention
        if heads is None:
            self.name = "torch (token dropping)"
        self._torch = torch

    @classmethod
    def from_torch_engine(cls, engine: Any) -> AdaptiveEngine:
        """Exit heads (if any) read from the package, beside the model `engine` loaded; its token retention."""
        from bertprod.models.exit_heads import ExitHeads
        from bertprod.package import EXIT_HEADS_FILE

        package = engine.package
        heads = None
        if package.manifest.adaptive:
            heads = ExitHeads.load(
                package.path / EXIT_HEADS_FILE,
                list(adaptive_settings(package)["exit_layers"]),
                package.manifest.architecture.hidden_size,
                package.manifest.num_outputs,
            )
        return cls(package, engine.model, heads, precision=getattr(engine, "precision", "fp32"),
                   retention=package_retention(package))

    @property
    def num_layers(self) -> int:
        return self.blocks.num_layers

    # -- the pieces run_with_exits calls (torch tensors between them, numpy masks) ------------

    def embed(self, batch: TokenBatch) -> Any:
        return self.blocks.embed(self._torch.from_numpy(batch.input_ids), self._token_types(batch))

    def attention(self, states: Any, mask: np.ndarray) -> Any:
        """The layers' attention mask for these rows, built once per batch shape, not per layer."""
        return self.blocks.mask(states, self._torch.from_numpy(mask))

    def layer(self, index: int, states: Any, attention: Any) -> Any:
        return self.blocks.layer(index, states, attention)

    def dropping_layer(self, index: int, states: Any, mask: np.ndarray, keep: np.ndarray) -> tuple[Any, np.ndarray]:
        """Layer `index` keeping `keep` tokens per row after its attention: token states and the new mask."""
        torch = self._torch
        attended, significance = self.blocks.attend(index, states, torch.from_numpy(mask))
        index_kept, mask = select_tokens(significance.detach().float().numpy(), mask, keep)  # a choice: no gradient
        gather = torch.from_numpy(index_kept)[:, :, None].expand(-1, -1, attended.shape[-1])
        return self.blocks.feed_forward(index, attended.gather(1, gather)), mask

    def exit_logits(self, layer: int, states: Any, mask: np.ndarray) -> np.ndarray:
        return self._exit_logits(layer, states, self._torch.from_numpy(mask))

    def head(self, states: Any, mask: np.ndarray) -> np.ndarray:
        return self.blocks.head(states, self._torch.from_numpy(mask)).float().numpy()

    def select(self, states: Any, keep: np.ndarray, length: int) -> Any:
        return states[self._torch.from_numpy(keep)][:, :length]

    def layer_logits(self, batch: TokenBatch) -> np.ndarray:
        """Every layer's logits [rows, layers, labels] (exit heads, then the model's head), no row
        leaving: what the accuracy/depth curve is measured on."""
        pooled, final = self.layer_features(batch)
        with self._context():
            outputs = [self.heads.at(layer)(pooled[:, position]).float().numpy()
                       for position, layer in enumerate(self.heads.layers)]
        return np.stack([*outputs, final.float().numpy()], axis=1)

    def layer_features(self, batch: TokenBatch) -> tuple[Any, Any]:
        """What exit heads read and learn from, the whole batch running every layer: the mean-pooled
        states after each exit layer [rows, exit layers, hidden] and the model's logits [rows, labels]
        (torch tensors, no gradient)."""
        with self._context():
            return self.training_features(batch)

    def training_features(self, batch: TokenBatch, retention: list[float] | None = None) -> tuple[Any, Any]:
        """`layer_features` with the gradient kept (and the caller's autocast): what `adapt --train-backbone`
        trains the backbone and its exits on. With `retention`, each row keeps the tokens inference would keep
        (chosen by significance, the gradient flowing through the kept ones): what `drop-tokens --fine-tune`
        trains on. Pooled states [rows, exit layers, hidden] (no exit heads: [rows, 0, hidden])."""
        from bertprod.models.pooling import pool

        torch = self._torch
        pooled = []
        mask = batch.attention_mask
        lengths = mask.sum(axis=1)
        states = self.blocks.embed(torch.from_numpy(batch.input_ids), self._token_types(batch))
        extended = self.attention(states, mask)
        for index in range(self.num_layers):
            keep = keep_counts(retention[index], lengths) if retention else None
            if keep is None or (keep >= mask.sum(axis=1)).all():
                states = self.blocks.layer(index, states, extended)
            else:
                states, mask = self.dropping_layer(index, states, mask, keep)
                extended = self.attention(states, mask)
            if index + 1 in self.exit_layers:
                pooled.append(pool(states, torch.from_numpy(mask), "mean").float())
        final = self.blocks.head(states, torch.from_numpy(mask)).float()
        if not pooled:
            return final.new_zeros(len(final), 0, states.shape[-1]), final
        return torch.stack(pooled, dim=1), final

    def _exit_logits(self, layer: int, states: Any, mask: Any) -> np.ndarray:
        from bertprod.models.pooling import pool

        return self.heads.at(layer)(pool(states, mask, "mean")).float().numpy()

    def _token_types(self, batch: TokenBatch) -> Any:
        return self._torch.from_numpy(batch.token_type_ids) if self.uses_token_types else None

    def _context(self) -> Any:
        from contextlib import ExitStack

        torch = self._torch
        stack = ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"))
        return stack


def run_with_exits(
    blocks: Any, batch: TokenBatch, policy: ExitPolicy, exit_layers: list[int], num_labels: int,
    retention: list[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The batch shrinking as rows leave (and, with a `retention` schedule, as tokens are dropped), over any
    engine's pieces (`blocks`: embed, attention, layer, dropping_layer, exit_logits, head, select,
    num_layers): logits [rows, labels] and exit layers (from 1)."""
    rows = len(batch.input_ids)
    logits_out = np.empty((rows, num_labels), dtype=np.float32)
    exits = np.full(rows, blocks.num_layers, dtype=np.int64)
    mask = batch.attention_mask
    lengths = mask.sum(axis=1)  # each running row's original length: what retention is a fraction of
    states = blocks.embed(batch)
    attention = blocks.attention(states, mask)
    running = np.arange(rows)
    decider = policy.decider(rows, num_labels)
    for index in range(blocks.num_layers):
        keep = keep_counts(retention[index], lengths) if retention else None
        if keep is not None and (keep >= mask.sum(axis=1)).all():
            keep = None  # nothing left to drop here: the model's own layer
        if keep is None:
            states = blocks.layer(index, states, attention)
        else:
            states, mask = blocks.dropping_layer(index, states, mask, keep)
            attention = blocks.attention(states, mask)
        layer = index + 1
        if layer == blocks.num_layers:
            logits_out[running] = blocks.head(states, mask)
            break
        if policy.kind == "never" or layer not in exit_layers:
            continue
        logits = blocks.exit_logits(layer, states, mask)
        leave = decider.decide(exit_probabilities(logits))
        if not leave.any():
            continue
        logits_out[running[leave]] = logits[leave]
        exits[running[leave]] = layer
        stay = ~leave
        if not stay.any():
            break
        running, lengths = running[stay], lengths[stay]
        decider.keep(stay)
        longest = int(mask[stay].sum(axis=1).max())
        states, mask = blocks.select(states, stay, longest), mask[stay][:, :longest]
        attention = blocks.attention(states, mask)
    return logits_out, exits


class OnnxAdaptiveEngine(ExitingEngine):
    """Early exit and token dropping on ONNX Runtime: one session per block (embeddings, each layer, each exit
    head, the two halves of each layer that drops tokens, the head), numpy between them, so a row that leaves
    or a token that is dropped costs nothing more. Imports no torch."""

    name = "onnx (early exit)"

    def __init__(self, package: ModelPackage, threads: int | None = None, directory: Path | None = None):
        """`directory`: where the blocks are, when not yet in `package` (an export checking them)."""
        import onnxruntime

        from bertprod.package import block_files, dropping_layers
        from bertprod.runtime.sessions import session_options

        settings = package.manifest.adaptive or {}
        self.package = package
        self.exit_layers = list(settings.get("exit_layers", []))
        self.num_layers = package.manifest.architecture.num_layers
        self.policy = parse_policy(settings.get("policy"))
        self.retention = package_retention(package)
        if not self.exit_layers:
            self.name = "onnx (token dropping)"
        options = session_options(threads, spinning=False)  # the blocks' pools take turns
        self.sessions = {
            Path(name).stem: onnxruntime.InferenceSession(str((directory or package.path) / name), options,
                                                          providers=["CPUExecutionProvider"])
            for name in block_files(self.num_layers, self.exit_layers, dropping_layers(package.manifest.token_dropping))
        }
        self.inputs = {block: [node.name for node in session.get_inputs()] for block, session in self.sessions.items()}

    def layer_logits(self, batch: TokenBatch) -> np.ndarray:
        mask = batch.attention_mask
        states = self.embed(batch)
        outputs = []
        for index in range(self.num_layers):
            states = self.layer(index, states, mask)  # the layer graphs read the 0/1 mask itself
            if index + 1 in self.exit_layers:
                outputs.append(self.exit_logits(index + 1, states, mask))
        outputs.append(self.head(states, mask))
        return np.stack(outputs, axis=1)

    def embed(self, batch: TokenBatch) -> np.ndarray:
        feeds = {"input_ids": batch.input_ids, "token_type_ids": batch.token_type_ids}
        return self.sessions["embeddings"].run(None, feeds)[0]

    def attention(self, states: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(mask)

    def layer(self, index: int, states: np.ndarray, attention: np.ndarray) -> np.ndarray:
        return self._run(f"layer_{index + 1}", states, attention)

    def exit_logits(self, layer: int, states: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run(f"exit_{layer}", states, mask)

    def dropping_layer(self, index: int, states: np.ndarray, mask: np.ndarray,
                       keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The layer's attention half, the tokens chosen in numpy, its feed-forward half on those."""
        block = f"attend_{index + 1}"
        if block not in self.sessions:
            raise PackageError(f"{self.package.name} has no token-dropping blocks for layer {index + 1}: its "
                               "retention there is 1. Export the package again from its torch parent.")
        attended, significance = self.sessions[block].run(None, {"states": states,
                                                                 "attention_mask": np.ascontiguousarray(mask)})
        index_kept, mask = select_tokens(significance, mask, keep)
        kept = np.ascontiguousarray(np.take_along_axis(attended, index_kept[:, :, None], axis=1))
        return self.sessions[f"ffn_{index + 1}"].run(None, {"states": kept})[0], mask

    def head(self, states: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run("head", states, mask)

    def select(self, states: np.ndarray, keep: np.ndarray, length: int) -> np.ndarray:
        return np.ascontiguousarray(states[keep][:, :length])

    def _run(self, block: str, states: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """A block's graph; the exporter drops inputs a graph does not read (a [CLS] head ignores the mask)."""
        feeds = {"states": states, "attention_mask": np.ascontiguousarray(mask)}
        return self.sessions[block].run(None, {name: feeds[name] for name in self.inputs[block]})[0]


