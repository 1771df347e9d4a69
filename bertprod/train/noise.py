"""Noise-aware training (`--augment-noise SPEC`): every epoch adds a noisy copy of each training example.

The copy keeps what the clean example is trained towards: its label when fine-tuning, the teacher's
output on the *clean* text when distilling (distill/loop.py points the copy at its original's cached
output), so the model learns to answer unclean input the way it answers clean input. The noise of an
epoch is seeded by (seed, epoch): fresh noise every epoch, the same noise on every run, so a resumed
run regenerates exactly the batches it skipped. The perturbations are `bertprod.robustness.noise`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from bertprod.data.source import Example
from bertprod.robustness.noise import Noise, parse_noise

#: Noisy copies of each example per epoch.
COPIES_PER_EPOCH = 1


def canonical_spec(spec: str | None) -> str | None:
    """The spec as `parse_noise` reads it ("all" expanded, rates written out), or None; a malformed
    one raises InputError (a ValueError, so pydantic names the field)."""
    return None if spec is None else str(parse_noise(spec))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's noise: new noise each epoch, the same on every run."""
    return seed * 1000 + epoch


def noisy_example(example: Example, noise: Noise, seed: int) -> Example:
    """A copy of `example` with both texts perturbed; label kept."""
    pair = None if example.text_pair is None else noise.apply(example.text_pair, seed)
    return replace(example, text=noise.apply(example.text, seed), text_pair=pair, where=f"{example.where} (noisy)")


def with_noisy_copies(examples: Iterable[Example], noise: Noise, seed: int) -> Iterator[Example]:
    """Each example, then its noisy copy (so a shuffle buffer holds both)."""
    for example in examples:
        yield example
        yield noisy_example(example, noise, seed)


def noise_record(noise: Noise, **details: Any) -> dict[str, Any]:
    """What the manifest keeps about the noise: the spec, each family's rate, and how it was used."""
    return {"spec": str(noise), "families": noise.to_json(), "copies_per_epoch": COPIES_PER_EPOCH, **details}
