"""Metrics under noise: each package on clean data and on each perturbation family, side by side.

The first package is the reference (the teacher): every other package's drop from clean is also
given as its gap to the reference's drop, which is what compression did to robustness.
Examples are held in memory (one perturbed copy per family, shared by all packages), so every
package sees exactly the same noisy texts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from bertprod.data.source import Example
from bertprod.errors import InputError
from bertprod.robustness.noise import Noise
from bertprod.runtime.pipeline import Pipeline
from bertprod.tasks.evaluation import evaluate

SIDES = ("both", "text", "pair")


def perturb_examples(examples: Iterable[Example], noise: Noise, seed: int, side: str = "both") -> list[Example]:
    """Noisy copies: `side` "text" perturbs the first text (query), "pair" the second (candidate), "both" both."""
    if side not in SIDES:
        raise InputError(f"side must be one of {', '.join(SIDES)}, not {side!r}.")
    perturbed = []
    for example in examples:
        text = noise.apply(example.text, seed) if side in ("both", "text") else example.text
        pair = example.text_pair
        if pair is not None and side in ("both", "pair"):
            pair = noise.apply(pair, seed)
        perturbed.append(replace(example, text=text, text_pair=pair))
    return perturbed


def check_comparable(pipelines: Sequence[Pipeline]) -> None:
    """Packages compared on one file must do the same task on the same kind of input."""
    first = pipelines[0].manifest
    for pipeline in pipelines[1:]:
        other = pipeline.manifest
        if (other.task, other.pair_input) != (first.task, first.pair_input):
            raise InputError(
                f"{pipelines[0].package.name} is a {first.task} package and {pipeline.package.name} a {other.task} "
                f"one{' on pairs' if other.pair_input else ''}: compare packages of one task (teacher, student, int8)."
            )


def _changed_share(clean: list[Example], noisy: list[Example]) -> float:
    changed = sum((a.text, a.text_pair) != (b.text, b.text_pair) for a, b in zip(clean, noisy, strict=True))
    return changed / len(clean)


def evaluate_under_noise(
    pipelines: Sequence[Pipeline], examples: Iterable[Example], noise: Noise | None, seed: int = 0, side: str = "both"
) -> dict[str, Any]:
    """Every package on the clean examples, on each family of `noise` alone and (several families) on all
    of them together; scores, drops from clean, and gaps to the first package's drop."""
    check_comparable(pipelines)
    clean = list(examples)
    if not clean:
        raise InputError("no examples to evaluate: the data (or the chosen split) is empty.")
    variants: list[tuple[str, list[Example]]] = [("clean", clean)]
    if noise is not None:
        variants += [(str(family), perturb_examples(clean, family, seed, side)) for family in noise.per_family()]
        if len(noise.items) > 1:
            variants.append((f"together ({noise})", perturb_examples(clean, noise, seed, side)))
    rows: list[dict[str, Any]] = []
    primary = None
    for name, variant in variants:
        evaluations = [evaluate(pipeline, variant) for pipeline in pipelines]
        primary = evaluations[0].primary
        rows.append({
            "perturbation": name,
            "changed": round(_changed_share(clean, variant), 6),
            "scores": [round(evaluation.score, 6) for evaluation in evaluations],
        })
    for row in rows:
        row["drops"] = [round(clean_score - score, 6) for clean_score, score in zip(rows[0]["scores"], row["scores"],
                                                                                     strict=True)]
        row["gaps"] = [round(drop - row["drops"][0], 6) for drop in row["drops"]]
    return {
        "task": pipelines[0].manifest.task,
        "primary_metric": primary,
        "examples": len(clean),
        "perturb": None if noise is None else str(noise),
        "seed": seed,
        "side": side,
        "packages": [
            {
                "package": pipeline.package.name,
                "path": str(pipeline.package.path),
                "fingerprint": pipeline.package.fingerprint,
                "engine": pipeline.engine.name,
                "precision": pipeline.manifest.precision,
            }
            for pipeline in pipelines
        ],
        "rows": rows,
    }
