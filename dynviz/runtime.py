"""Serving shared models: a bounded number of inferences at a time, read-only.

Several browser sessions share one model object and two cores: inferences queue for a
slot rather than thrash, and each uses a bounded number of torch threads.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

MAX_CONCURRENT = int(os.environ.get("DYNVIZ_MAX_CONCURRENT", "1"))
_slots = threading.BoundedSemaphore(MAX_CONCURRENT)
torch.set_num_threads(max(1, (os.cpu_count() or 1) // MAX_CONCURRENT))


@contextmanager
def inference_slot() -> Iterator[None]:
    """Wait for a free slot, then run read-only: inference mode is entered in this thread."""
    with _slots, torch.inference_mode():
        yield


_locks: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


@contextmanager
def exclusive(model: nn.Module) -> Iterator[None]:
    """Hold the model alone, for work that attaches hooks (captum, FlopCounterMode)."""
    with _locks_guard:
        lock = _locks.setdefault(model, threading.Lock())
    with _slots, lock:
        yield
