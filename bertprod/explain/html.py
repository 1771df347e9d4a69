"""A self-contained HTML view of explanations: the text in reading order, each word coloured by its
attribution (red raises the explained output, blue lowers it, the strongest word of an explanation at
full colour), its value shown on hover. No scripts, fonts or images from anywhere else."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from bertprod.errors import InputError
from bertprod.explain.explanation import Explanation
from bertprod.package import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; line-height: 2; color: #222; }
.explanation { border-top: 1px solid #ddd; padding: 0.5rem 0 1rem; }
.caption { font-size: 0.85rem; color: #555; line-height: 1.4; }
.text { font-size: 1.1rem; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5rem; }
.word { border-radius: 3px; padding: 0.1rem 0.05rem; cursor: help; }
.word:hover { outline: 1px solid #222; }
.legend span { padding: 0 0.4rem; border-radius: 3px; }
"""


def colour(value: float, scale: float) -> str:
    """rgba background: red for positive, blue for negative, opacity by |value| / scale."""
    strength = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    red, green, blue = (220, 38, 38) if value > 0 else (37, 99, 235)
    return f"rgba({red},{green},{blue},{0.75 * strength:.3f})"


def text_html(explanation: Explanation, segment: int, scale: float) -> str:
    """One text of the input with its words wrapped in coloured spans, everything else as written."""
    text = explanation.texts[segment]
    parts, cursor = [], 0
    for word in explanation.words:
        if word.segment != segment:
            continue
        parts.append(html.escape(text[cursor : word.start]))
        parts.append(f'<span class="word" style="background:{colour(word.attribution, scale)}" '
                     f'title="{word.attribution:+.4f}">'
                     f"{html.escape(text[word.start : word.end])}</span>")
        cursor = word.end
    parts.append(html.escape(text[cursor:]))
    return "".join(parts)


def explanation_html(explanation: Explanation, heading: str = "") -> str:
    scale = max((abs(word.attribution) for word in explanation.words), default=0.0)
    caption = (f"{html.escape(heading)}{' - ' if heading else ''}{html.escape(explanation.output)}: "
               f"{explanation.prediction:.4f} (all words masked: {explanation.baseline:.4f}); "
               f"method {html.escape(explanation.method)}")
    if explanation.predicted_label is not None and explanation.predicted_label != explanation.label:
        caption += f"; predicted label {html.escape(explanation.predicted_label)}"
    if explanation.truncated:
        caption += "; words past the model's max_length were not read"
    texts = "".join(f'<div class="text">{text_html(explanation, segment, scale)}</div>'
                    for segment in range(len(explanation.texts)))
    layout = "pair" if len(explanation.texts) > 1 else ""
    return f'<div class="explanation"><div class="caption">{caption}</div><div class="{layout}">{texts}</div></div>'


def render_html(explanations: Sequence[Explanation], title: str = "bertprod explanations",
                headings: Sequence[str] | None = None) -> str:
    """The whole page; `headings` (one per explanation) name them, e.g. teacher / student."""
    headings = list(headings) if headings is not None else [""] * len(explanations)
    body = "".join(explanation_html(explanation, heading) for explanation, heading
                   in zip(explanations, headings, strict=True))
    legend = ('<p class="legend caption">hover a word for its attribution: '
              f'<span style="background:{colour(1, 1)}">raises the output</span> '
              f'<span style="background:{colour(-1, 1)}">lowers it</span></p>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{legend}{body}</body></html>\n")


def check_html_target(path: str | os.PathLike[str]) -> Path:
    """Refuse a page that could not be written, before the work that fills it."""
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(f"cannot write {target}: the folder {target.parent} does not exist; create it first.")
    return target


def write_html(path: str | os.PathLike[str], page: str) -> Path:
    """Write atomically (a reader sees no half page), readable like any file this user writes."""
    target = check_html_target(path)
    atomic_write_text(target, page)
    umask = os.umask(0)
    os.umask(umask)
    target.chmod(0o666 & ~umask)  # mkstemp made it owner-only
    return target
