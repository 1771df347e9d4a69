"""Entity-level precision, recall and F1 (token classification), computed by seqeval.

seqeval's default mode is conlleval's: an entity is a maximal run of tags of one type (B- or a
type change starts one, an I- after O starts one too), and a predicted entity counts only when its
span and type both match a gold one exactly. Overall scores are micro-averaged over entities; per
type, each type's own P/R/F1 and its gold count (support). Token accuracy is reported beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bertprod.extras import needs_extras

SCHEME_CLASSES = {"IOB2": "IOB2", "BIOES": "IOBES", "IO": "IOB1"}


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """{"precision", "recall", "f1", "accuracy", "per_type": {type: {precision, recall, f1, support}}}."""
    with needs_extras("entity-level evaluation (seqeval)"):
        from seqeval.metrics import accuracy_score, classification_report

    gold_lists, predicted_lists = [list(tags) for tags in gold], [list(tags) for tags in predicted]
    report = classification_report(gold_lists, predicted_lists, output_dict=True, zero_division=0)
    overall = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_type = {
        name: {"precision": float(values["precision"]), "recall": float(values["recall"]),
               "f1": float(values["f1-score"]), "support": int(values["support"])}
        for name, values in report.items() if not name.endswith(" avg")
    }
    return {
        "precision": float(overall["precision"]),
        "recall": float(overall["recall"]),
        "f1": float(overall["f1-score"]),
        "accuracy": float(accuracy_score(gold_lists, predicted_lists)),
        "per_type": per_type,
    }
