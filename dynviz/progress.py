"""Progress: with an ETA on stderr, for the CLI's long loops; and reported from inside a long analysis to
whoever listens (a page's progress bar)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, what: str, every_seconds: float = 2.0) -> Iterator[T]:
    start = last = time.perf_counter()
    for done, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every_seconds or done == total:
            eta = (now - start) / done * (total - done)
            print(
                f"\r{what}: {done}/{total}  ETA {eta:5.0f} s",
                end="\n" if done == total else "",
                file=sys.stderr,
                flush=True,
            )
            last = now


Listener = Callable[[float, str], None]
_listener: ContextVar[Listener | None] = ContextVar("progress_listener", default=None)


@contextmanager
def reporting(listener: Listener) -> Iterator[None]:
    """Send what :func:`report` says, within this block and this thread, to ``listener`` (a page's progress bar)."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def report(fraction: float, text: str) -> None:
    """How far a long analysis (a clip, frame by frame) has got, for whoever listens."""
    if (listener := _listener.get()) is not None:
        listener(min(max(fraction, 0.0), 1.0), text)
