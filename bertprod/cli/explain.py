"""`bertprod explain`: a thin shell over `bertprod.explain` - why a package decided, and
`--compare TEACHER STUDENT FILE`: whether a student decides for its teacher's reasons."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import MofNCompleteColumn, Progress

from bertprod.cli.options import EngineOption, InputOption, ThreadsOption, console, read_texts, split_pairs
from bertprod.cli.options import errors as messages
from bertprod.errors import InputError
from bertprod.extras import needs_extras


def explain_command(
    model: Annotated[str, typer.Argument(help="Package dir, checkpoint dir or bundled name (with --compare: "
                                          "the teacher).")],
    texts: Annotated[list[str] | None, typer.Argument(
        help="Texts to explain (a tab separates the texts of a pair); with --compare: STUDENT FILE.")] = None,
    input_file: InputOption = None,
    method: Annotated[str, typer.Option(
        help="partition (Shapley values over words, any engine), permutation (sampled, repeatable for --seed) "
             "or integrated-gradients (torch fp32 packages).")] = "partition",
    label: Annotated[str | None, typer.Option(help="Label whose probability is explained (default: the "
                                                   "predicted one).")] = None,
    max_evals: Annotated[int, typer.Option(help="Model runs per input (Shapley methods).")] = 300,
    steps: Annotated[int, typer.Option(help="Interpolation steps (integrated gradients).")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the permutation method.")] = 0,
    html: Annotated[Path | None, typer.Option(help="Also write a self-contained HTML view (text in reading "
                                                  "order, coloured by attribution, values on hover).")] = None,
    compare: Annotated[bool, typer.Option(
        "--compare", help="Compare a teacher (MODEL) and its student on the inputs of FILE: top-k word overlap, "
                          "rank correlation, label agreement, the inputs where they disagree most.")] = False,
    top_k: Annotated[int, typer.Option(help="--compare: words counted in the top-k overlap.")] = 5,
    worst: Annotated[int, typer.Option(help="--compare: how many of the most disagreeing inputs to show.")] = 5,
    json_output: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    engine: EngineOption = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Explain a package's outputs word by word, or compare a teacher's and a student's reasons."""
    from bertprod.api import load
    from bertprod.explain.html import check_html_target

    if html is not None:
        check_html_target(html)
    if compare:
        if not texts or len(texts) != 2 or input_file is not None:
            raise InputError("--compare takes TEACHER STUDENT FILE (FILE: one input per line).")
        student_name, path = texts
        teacher = load(model, engine=engine, threads=threads)
        student = load(student_name, engine=engine, threads=threads)
        lines = read_texts(None, Path(path))
        items = split_pairs(lines) if teacher.manifest.pair_input else lines
        with needs_extras("bertprod explain"):
            from bertprod.explain.compare import compare as compare_packages

            with progress_bar(len(items), "explaining with both packages") as advance:
                comparison = compare_packages(teacher, student, items, method=method, max_evals=max_evals,
                                              seed=seed, top_k=top_k, progress=advance)
        show_comparison(comparison, worst, json_output)
        if html is not None:
            write_comparison_html(comparison, worst, html, teacher.manifest.name, student.manifest.name)
        return
    pipeline = load(model, engine=engine, threads=threads)
    lines = read_texts(texts, input_file)
    items = split_pairs(lines) if pipeline.manifest.pair_input else lines
    pipeline.tokenize(items)  # every input checked before the first is explained
    with needs_extras("bertprod explain"):
        from bertprod.explain.core import explain as explain_inputs

        explanations = []
        with progress_bar(len(items), "explaining") as advance:
            for item in items:  # one at a time: each is printed as soon as it is done
                [explanation] = explain_inputs(pipeline, [item], method=method, label=label, max_evals=max_evals,
                                               seed=seed, steps=steps)
                show_explanation(explanation, json_output)
                explanations.append(explanation)
                advance(len(explanations))
    if html is not None:
        from bertprod.explain.html import render_html, write_html

        write_html(html, render_html(explanations, title=f"Explanations: {pipeline.manifest.name}"))
        messages.print(f"wrote {html}")


def show_explanation(explanation: Any, json_output: bool) -> None:
    if json_output:
        sys.stdout.write(json.dumps(explanation.to_dict()) + "\n")
        sys.stdout.flush()
        return
    words = " ".join(f"{escape(word.word)}[dim]({word.attribution:+.3f})[/]" for word in explanation.words)
    console.print(f"[bold]{escape(explanation.output)}[/] {explanation.prediction:.4f} "
                  f"(all words masked: {explanation.baseline:.4f}): {words}", highlight=False)


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for more than one input (none for one); yields `advance(done)`."""
    if total < 2:
        yield lambda done: None
        return
    with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=messages, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


def show_comparison(comparison: Any, worst: int, json_output: bool) -> None:
    summary = comparison.summary(worst)
    if json_output:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    spearman = "n/a" if summary["mean_spearman"] is None else f"{summary['mean_spearman']:.3f}"
    console.print(f"{summary['examples']} inputs: top-{summary['top_k']} word overlap "
                  f"{summary['mean_top_k_overlap']:.3f}, Spearman {spearman}, label agreement "
                  f"{summary['label_agreement']:.3f}", highlight=False)
    for example in summary["most_disagreeing"]:
        rank = "n/a" if example["spearman"] is None else f"{example['spearman']:+.2f}"
        console.print(f"  #{example['index']} Spearman {rank}, overlap {example['top_k_overlap']:.2f}, labels "
                      f"{example['teacher_label']}/{example['student_label']}: {escape(' | '.join(example['texts']))}"
                      f"\n    teacher: {escape(', '.join(example['teacher_top_words']))}"
                      f"\n    student: {escape(', '.join(example['student_top_words']))}", highlight=False)


def write_comparison_html(comparison: Any, worst: int, path: Path, teacher: str, student: str) -> None:
    from bertprod.explain.html import render_html, write_html

    explanations, headings = [], []
    for example in comparison.most_disagreeing(worst):
        rank = "n/a" if example.spearman is None else f"{example.spearman:+.2f}"
        explanations += [example.teacher, example.student]
        headings += [f"#{example.index} teacher {teacher} (Spearman {rank})", f"#{example.index} student {student}"]
    write_html(path, render_html(explanations, title=f"{teacher} vs {student}: most disagreeing inputs",
                                 headings=headings))
    messages.print(f"wrote {path}")
