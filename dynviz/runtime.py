"""Serving shared models: a bounded number of inferences at a time, read-only, on one core each.

Several browser sessions share one model object and two cores: inferences queue for a
slot rather than thrash, and each runs on :data:`INFERENCE_THREADS` torch threads.
"""

from __future__ import annotations

import os
import shutil
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

MAX_CONCURRENT = int(os.environ.get("DYNVIZ_MAX_CONCURRENT", "1"))
_slots = threading.BoundedSemaphore(MAX_CONCURRENT)
INFERENCE_THREADS = int(os.environ.get("DYNVIZ_THREADS", "1"))
"""Torch threads per inference. At batch size one these networks' operations are too small to share out
(Lite0 runs 10% faster on two cores than on one), and a second thread waits at every operation for a core
that the browser, another session or a neighbouring machine may hold: with one other busy process on two
cores Lite0 took 5x longer on two threads and no longer on one. The latencies shown stay those of the
network. Single-core latency is also how mobile networks' latency is reported (MobileNet, EfficientNet-Lite)."""
torch.set_num_threads(INFERENCE_THREADS)


def compiling_enabled() -> bool:
    """Whether torch.compile may be used: its CPU backend (inductor) builds C++ with the machine's compiler;
    ``DYNVIZ_COMPILE=0`` turns it off."""
    return os.environ.get("DYNVIZ_COMPILE", "1") != "0" and shutil.which(os.environ.get("CXX", "g++")) is not None


@contextmanager
def every_core() -> Iterator[None]:
    """Batched work (training, bench/channel_oracle.py): batches are large enough to share across every core."""
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(INFERENCE_THREADS)


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
