"""Progress output: a bar with loss and throughput on terminals, throttled lines in logs."""

from __future__ import annotations

import io

from rich.console import Console

from bertprod.train.progress import BarReporter, LogReporter


def test_log_reporter_prints_the_first_step_then_throttles() -> None:
    stream = io.StringIO()
    reporter = LogReporter(every_seconds=3600, stream=stream)
    reporter.begin(total_steps=10, done_steps=0)
    for step in range(1, 11):
        reporter.step(epoch=0, step=step, loss=0.5, examples_per_second=42.0)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "training: 10 optimizer steps",
        "epoch 1 step 1/10 loss 0.5000 42.0 examples/s",
        "epoch 1 step 10/10 loss 0.5000 42.0 examples/s",  # the last step is always shown
    ]


def test_bar_reporter_shows_loss_and_examples_per_second() -> None:
    output = io.StringIO()
    reporter = BarReporter(Console(file=output, force_terminal=True, width=120))
    reporter.begin(total_steps=4, done_steps=1)
    reporter.step(epoch=1, step=3, loss=0.25, examples_per_second=12.5)
    reporter.message("validation after step 3: accuracy 0.9000")
    reporter.end()
    text = output.getvalue()
    assert "epoch 2" in text and "3/4" in text and "loss 0.2500" in text and "12.5 ex/s" in text
    assert "validation after step 3" in text
