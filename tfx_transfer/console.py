"""What the toolkit prints while it works: Keras' progress bars on a terminal, plain lines elsewhere.

Keras redraws its bar with carriage returns and ANSI colour codes. Written to a file or a pipe (CI,
`nohup`, `| tee`), that became one line of tens of kilobytes per epoch, and ~400 KB for a predict of
70,000 images. So when standard output is not a terminal, training prints one plain line per epoch
(Keras' `verbose=2`) and scoring one line per tenth of the images (`Progress`), with no escape codes.

Like `startup`, this is the bottom layer: it imports nothing of the package, and Keras only inside
`Progress.keras_callback`.

Example:
    >>> progress = Progress(1000, stream=io.StringIO(), interactive=False)
    >>> for done in range(100, 1001, 100):
    ...     progress.update(done)
    >>> progress.stream.getvalue().splitlines()[0]
    'scored 100 of 1,000 images (10%)'
"""

from __future__ import annotations

import io  # noqa: F401  (the example's)
import sys

#: Without a terminal, a line each time this share more of the images is done.
LINE_EVERY = 0.1


def interactive(stream=None) -> bool:
    """Whether `stream` (standard output by default) is a terminal that can redraw a bar."""
    stream = sys.stdout if stream is None else stream
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def keras_verbose(verbose: int) -> int:
    """Keras' `verbose` for `fit`: its bar (1) on a terminal, one plain line per epoch (2) elsewhere, 0 for quiet."""
    if not verbose:
        return 0
    return 1 if interactive() else 2


class Progress:
    """Progress through `total` images: redrawn in place on a terminal, a plain line per `LINE_EVERY` elsewhere.

    Args:
        total: How many images there are.
        what: What is being done, as the lines say it.
        stream: Where the lines go (standard error by default, so a CSV on standard output stays clean).
        interactive: Redraw in place; by default, whether `stream` is a terminal.
    """

    def __init__(self, total: int, what: str = "scored", stream=None, interactive: bool | None = None):
        self.total, self.what = int(total), what
        self.stream = sys.stderr if stream is None else stream
        self.interactive = globals()["interactive"](self.stream) if interactive is None else interactive
        self._next_line = LINE_EVERY

    def update(self, done: int) -> None:
        done = min(int(done), self.total)
        if self.interactive:
            print(f"\r{self.what} {done:,}/{self.total:,} images", end="", file=self.stream, flush=True)
            return
        share = done / self.total if self.total else 1.0
        if share + 1e-12 >= self._next_line or done == self.total:
            print(f"{self.what} {done:,} of {self.total:,} images ({share:.0%})", file=self.stream, flush=True)
            while self._next_line <= share + 1e-12:
                self._next_line += LINE_EVERY

    def close(self) -> None:
        if self.interactive:
            print(file=self.stream, flush=True)

    def keras_callback(self, batch_size: int):
        """A Keras callback that reports `model.predict`'s batches (of `batch_size` images) here."""
        import keras

        progress = self

        class _PredictProgress(keras.callbacks.Callback):
            def on_predict_batch_end(self, batch, logs=None):
                progress.update((batch + 1) * batch_size)

            def on_predict_end(self, logs=None):
                progress.close()

        return _PredictProgress()
