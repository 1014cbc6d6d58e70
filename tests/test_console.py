"""Progress output: redrawn on a terminal, plain lines elsewhere (CI, nohup, `| tee`)."""

from __future__ import annotations

import io
import sys

import pytest

from tfx_transfer.console import Progress, interactive, keras_verbose


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_without_a_terminal_is_a_plain_line_per_tenth():
    stream = io.StringIO()
    progress = Progress(70_000, stream=stream)
    for done in range(64, 70_000 + 64, 64):  # predict's batches, the last one partly filled
        progress.update(done)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[0] == "scored 7,040 of 70,000 images (10%)"
    assert lines[-1] == "scored 70,000 of 70,000 images (100%)"
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_progress_on_a_terminal_redraws_one_line():
    stream = _Terminal()
    progress = Progress(100, stream=stream)
    assert progress.interactive
    for done in (50, 100):
        progress.update(done)
    progress.close()
    assert stream.getvalue() == "\rscored 50/100 images\rscored 100/100 images\n"


@pytest.mark.parametrize("terminal, verbose, expected", [(True, 1, 1), (False, 1, 2), (True, 0, 0), (False, 0, 0)])
def test_keras_gets_its_bar_only_on_a_terminal(monkeypatch, terminal, verbose, expected):
    monkeypatch.setattr(sys, "stdout", _Terminal() if terminal else io.StringIO())
    assert interactive() is terminal
    assert keras_verbose(verbose) == expected
