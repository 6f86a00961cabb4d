"""Progress with an ETA on stderr, for the CLI's long loops."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
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
