"""Progress bars that log records and Python warnings do not break.

While :func:`progress_bar` is open, console log lines (the root logger's and detectron2's handlers) and
warnings are written above the bar with ``tqdm.write`` instead of into the middle of its line.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

__all__ = ["progress_bar"]


def _console_loggers() -> list[logging.Logger]:
    """The loggers that write to the console themselves: the root logger (also when it has no handler: Python's
    last-resort handler prints its warnings) and every other logger with a console handler (detectron2's)."""
    def console(logger: logging.Logger) -> bool:
        return any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stdout, sys.stderr)
                   for h in logger.handlers)

    others = [lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)]
    return [lg for lg in [logging.root, *others] if console(lg) or (lg is logging.root and not lg.handlers)]


@contextlib.contextmanager
def progress_bar(*args, **kwargs) -> Iterator[tqdm]:
    """``tqdm(*args, **kwargs)`` as a context; log lines and warnings meanwhile go above the bar."""

    def show(message, category, filename, lineno, file=None, line=None):
        tqdm.write(warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n"),
                   file=file or sys.stderr)

    with logging_redirect_tqdm(loggers=_console_loggers()), warnings.catch_warnings():
        warnings.showwarning = show
        with tqdm(*args, **kwargs) as bar:
            yield bar
