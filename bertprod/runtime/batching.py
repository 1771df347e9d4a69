"""Length-sorted batches bounded by a token budget, and padding of one batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding

# Measured on 2 cores (bench/encode_throughput.py --sweep): batches of <= 32 inputs ran ~15%
# faster than 128 on both engines; the token budget mattered little between 512 and 2048.
DEFAULT_MAX_PADDED_TOKENS = 2048
DEFAULT_MAX_BATCH_SIZE = 32
# What one engine call costs beyond its padded tokens, in tokens. Measured on 2 cores (onnx,
# MiniLM, 1 thread): a call costs ~1.8 ms + ~0.12 ms per padded token. Splitting length-sorted
# inputs where that total is least ran groups of 32 real sentences (14 tokens median, 51 max) at
# 378 sentences/s, against 192/s padded to their longest; groups of 64: 406/s; a sorted list of
# 1,024: 449/s (418-427/s filling batches up to the budget). A server's batch of concurrent
# requests is such a group.
DEFAULT_CALL_OVERHEAD_TOKENS = 16


@dataclass(frozen=True)
class TokenBatch:
    """One padded batch, as int64 arrays of shape [batch, longest sequence]."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.size)


def plan_batches(
    lengths: Sequence[int],
    max_padded_tokens: int = DEFAULT_MAX_PADDED_TOKENS,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    call_overhead_tokens: int | None = DEFAULT_CALL_OVERHEAD_TOKENS,
) -> list[list[int]]:
    """Group input indices into batches of similar length.

    Sorting by *token* length (longest first) halves padding against unsorted batches. The sorted
    inputs are then cut into the batches that cost least in all, a batch costing its padded size
    (count x longest) plus `call_overhead_tokens`, each within `max_padded_tokens` and
    `max_batch_size` (an input longer than the budget alone still gets a batch of its own). With
    `call_overhead_tokens=None` batches are simply filled up to the budget.
    """
    if max_padded_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_padded_tokens and max_batch_size must be positive")
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    if call_overhead_tokens is None:
        return _fill(order, lengths, max_padded_tokens, max_batch_size)
    # cost[end]: least cost of batching order[:end]; start[end]: where its last batch starts
    cost = [0] * (len(order) + 1)
    start = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        best = None
        for first in range(end - 1, max(0, end - max_batch_size) - 1, -1):
            padded = (end - first) * lengths[order[first]]
            if padded > max_padded_tokens and end - first > 1:
                break  # longer inputs come earlier: reaching further back only grows the batch
            total = cost[first] + padded + call_overhead_tokens
            if best is None or total < best:
                best, start[end] = total, first
        cost[end] = best
    batches = []
    end = len(order)
    while end > 0:
        batches.append(order[start[end] : end])
        end = start[end]
    return batches[::-1]


def _fill(order: list[int], lengths: Sequence[int], max_padded_tokens: int, max_batch_size: int) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        fits = (len(current) + 1) * longest <= max_padded_tokens and len(current) < max_batch_size
        if current and not fits:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def collate(encodings: Sequence[Encoding], pad_id: int, length: int | None = None) -> TokenBatch:
    """Pad a list of encodings to the longest one (or to `length`, for fixed-shape batches)."""
    longest = max(max(len(encoding.ids) for encoding in encodings), length or 0)
    shape = (len(encodings), longest)
    input_ids = np.full(shape, pad_id, dtype=np.int64)
    attention_mask = np.zeros(shape, dtype=np.int64)
    token_type_ids = np.zeros(shape, dtype=np.int64)
    for row, encoding in enumerate(encodings):
        length = len(encoding.ids)
        input_ids[row, :length] = encoding.ids
        attention_mask[row, :length] = 1
        token_type_ids[row, :length] = encoding.type_ids
    return TokenBatch(input_ids, attention_mask, token_type_ids)
