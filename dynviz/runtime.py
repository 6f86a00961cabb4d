"""Serving shared models: one wrapper around every ``analyze``.

Several browser sessions share one model object and two cores. Everything that
makes that safe and fast lives here, so that a model file holds only its method:

- an inference slot: a bounded number of inferences at a time, each read-only
  (``torch.inference_mode``) on :data:`INFERENCE_THREADS` torch threads;
- the memo of each (model, input): the parts a model already computed for that
  input (exits, stages, glances), so that a new knob setting only re-decides.
  One lock per memo: two sessions analysing the same photo never interleave on
  it (MSDNet's memo holds the features of its deepest computed block, which a
  concurrent analysis at other thresholds would otherwise replace mid-way);
- the traces already answered, by (model, input digest, settings): a page
  revisited, or the same photo opened by another session, is not recomputed.

Both caches are bounded LRUs, so the server's memory does not grow with the
number of uploads.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

MAX_CONCURRENT = int(os.environ.get("DYNVIZ_MAX_CONCURRENT", "1"))
INFERENCE_THREADS = int(os.environ.get("DYNVIZ_THREADS", "1"))
"""Torch threads per inference. At batch size one these networks' operations are too small to share out
(Lite0 runs 10% faster on two cores than on one), and a second thread waits at every operation for a core
that the browser, another session or a neighbouring machine may hold: with one other busy process on two
cores Lite0 took 5x longer on two threads and no longer on one. The latencies shown stay those of the
network. Single-core latency is also how mobile networks' latency is reported (MobileNet, EfficientNet-Lite)."""


def compiled_paths_wanted() -> bool:
    """``DYNVIZ_COMPILE=0`` turns off everything compiled or fused: torch.compile in training, the fused
    inference paths (:mod:`dynviz.fused`) and the C++ operators (:mod:`dynviz.native`)."""
    return os.environ.get("DYNVIZ_COMPILE", "1") != "0"


def compiling_enabled() -> bool:
    """Whether C++ may be built (torch.compile's CPU backend, :mod:`dynviz.native`): the machine has a compiler
    and :func:`compiled_paths_wanted`."""
    return compiled_paths_wanted() and shutil.which(os.environ.get("CXX", "g++")) is not None


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
"""glibc's ``mallopt`` parameters (malloc.h)."""


def reuse_freed_memory() -> None:
    """Keep freed memory in this process for the next allocation of its size (glibc only; elsewhere nothing).

    glibc serves large blocks (above 32 MiB at the most: a batch of Lite0's activations at 224 px) by mmap and
    returns them to the kernel when freed, so every training step faults its activations in afresh and the
    kernel zeroes each page: a Lite0 distillation spent more CPU time in the kernel than in its arithmetic.
    From the heap, never trimmed, a step reuses the blocks of the steps before; four of Lite0's training steps
    at batch 32 took 16 CPU-s instead of 27 and peaked at 3.9 GB instead of 3.2 (docs/training.md). For
    training processes, not the server."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # an int: the largest it takes
    except (OSError, AttributeError):
        pass


@contextmanager
def every_core() -> Iterator[None]:
    """Batched work (training, bench/channel_oracle.py): batches are large enough to share across every core,
    or across the ``OMP_NUM_THREADS`` a user set (two trainings side by side, a thread each)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(INFERENCE_THREADS)


class Slots:
    """At most ``size`` holders at a time; background work (the start-up warm-up) takes a free slot only while
    no visitor's request is waiting for one, so that a visitor waits for at most the inferences already
    running, not for a queue of background ones."""

    def __init__(self, size: int):
        self._changed = threading.Condition()
        self._free = size
        self._visitors_waiting = 0

    @property
    def visitors_waiting(self) -> int:
        return self._visitors_waiting

    @contextmanager
    def hold(self, background: bool = False) -> Iterator[None]:
        with self._changed:
            self._visitors_waiting += not background
            try:
                self._changed.wait_for(lambda: self._free > 0 and (not background or not self._visitors_waiting))
            finally:
                self._visitors_waiting -= not background
            self._free -= 1
        try:
            yield
        finally:
            with self._changed:
                self._free += 1
                self._changed.notify_all()


_slots = Slots(MAX_CONCURRENT)


@contextmanager
def inference(background: bool = False) -> Iterator[None]:
    """Wait for a free slot (after every waiting visitor, for ``background`` work), then run read-only on
    :data:`INFERENCE_THREADS` threads."""
    with _slots.hold(background), torch.inference_mode():
        if torch.get_num_threads() != INFERENCE_THREADS:
            torch.set_num_threads(INFERENCE_THREADS)
        yield


@contextmanager
def timed_rerun(page: str) -> Iterator[None]:
    """With ``DYNVIZ_RERUN_LOG`` set to a file, append each script run's page, wall time and end (seconds since the
    epoch) to it: the server's side of a visit, without the browser's drawing (bench/load.py reports it)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if log := os.environ.get("DYNVIZ_RERUN_LOG"):
            with open(log, "a") as lines:  # one short write in append mode: whole lines from every thread
                lines.write(f"{page}\t{time.perf_counter() - start:.4f}\t{time.time():.6f}\n")


_locks: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


@contextmanager
def exclusive(model: nn.Module) -> Iterator[None]:
    """Hold the model alone, for work that attaches hooks (captum, FlopCounterMode)."""
    with _locks_guard:
        lock = _locks.setdefault(model, threading.Lock())
    with _slots.hold(), lock:
        yield


class BoundedCache:
    """A least-recently-used mapping, safe to share between threads, whose items weigh at most ``budget`` in
    all (``weight(item)``, by default 1 each: at most ``budget`` items); the newest item always stays."""

    def __init__(self, budget: int, weight: Callable[[Any], int] = lambda _: 1):
        self.budget = budget
        self.weight = weight
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, create: Callable[[], Any] | None = None) -> Any:
        """The item under ``key`` (now the most recently used); created by ``create`` when absent."""
        with self._lock:
            entry = self._items.pop(key, None)
            if entry is None and create is not None:
                item = create()
                entry = (item, self.weight(item)) if item is not None else None
                self._held += entry[1] if entry else 0
            if entry is None:
                return None
            self._items[key] = entry
            while self._held > self.budget and len(self._items) > 1:
                self._held -= self._items.popitem(last=False)[1][1]
            return entry[0]

    def put(self, key: Hashable, item: Any) -> None:
        self.get(key, lambda: item)

    def __len__(self) -> int:
        return len(self._items)


class SharedMemo(dict):
    """Parts one model computed for one input (the models' ``memo``), and the lock that serialises the
    analyses using them."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def settings_key(settings: dict[str, float] | None) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((settings or {}).items()))


def bundled_model(name: str) -> Any:
    """The zoo's model ``name`` with its bundled weights."""
    # The zoo imports every model: only when a model is asked for.
    from dynviz.zoo import create_model

    return create_model(name)


TRACE_VALUES = 4_000_000
"""What the answers kept for every session may hold in all, in values (:meth:`dynviz.trace.Trace.values`: about
30 bytes each, so about 120 MB): some 20,000 answers of an early-exit model, or 10,000 of a deformable one
(its every sampling point), or 200 of a long clip's frames."""


class Server:
    """Every analysis an app process answers goes through :meth:`analyze`; every model it serves is built once
    by :meth:`model`, with ``build``."""

    def __init__(
        self, build: Callable[[str], Any] = bundled_model, memo_entries: int = 1024, trace_values: int = TRACE_VALUES
    ):
        self.build = build
        self.memos = BoundedCache(memo_entries)
        self.traces = BoundedCache(trace_values, lambda trace: trace.values())
        self._models: dict[str, Any] = {}
        self._defaults: dict[str, dict[str, float]] = {}
        self._building = threading.Lock()

    def model(self, name: str) -> Any:
        """The one shared instance of model ``name`` (built at its first request; others wait for it)."""
        if name not in self._models:
            with self._building:
                if name not in self._models:
                    self._models[name] = self.build(name)
        return self._models[name]

    def key(self, name: str, model: Any, image: Any, settings: dict[str, float] | None) -> Hashable:
        """An answer's cache key: knobs left out are at their defaults, so that a page's sliders at their
        defaults and a call with no settings (the Compare page, the warm-up) share one answer."""
        if name not in self._defaults:  # a gallery asks for 500 keys a rerun: knobs are built once
            self._defaults[name] = {knob.name: knob.default for knob in model.knobs()}
        return name, image.digest, settings_key(self._defaults[name] | (settings or {}))

    def answered(self, name: str, model: Any, image: Any, settings: dict[str, float] | None = None) -> bool:
        """Whether ``image`` under ``settings`` was already answered by ``model`` (registered as ``name``)."""
        return self.traces.get(self.key(name, model, image, settings)) is not None

    def analyze(
        self, name: str, model: Any, image: Any, settings: dict[str, float] | None = None, background: bool = False
    ) -> Any:
        """``model.analyze(image, settings)`` (``model`` registered as ``name``), answered once per
        (name, image digest, settings) and computed on the memo of (name, image); ``background`` work yields
        the inference slot to visitors (:class:`Slots`)."""
        key = self.key(name, model, image, settings)
        trace = self.traces.get(key)
        if trace is not None:
            return trace
        memo = self.memos.get((name, image.digest), SharedMemo)
        if background:
            # The slot first, then the memo only if it is free: background work that held a memo while it waited
            # behind the visitors would hold up a visitor asking for the same input (a picked photo's prefetch).
            with inference(background=True):
                if memo.lock.acquire(blocking=False):
                    try:
                        return self._answer(key, model, image, settings, memo, contextlib.nullcontext())
                    finally:
                        memo.lock.release()
        # A visitor, or background work whose memo another is computing on: the memo, then the slot (a visitor's
        # turn for the latter, since visitors may wait on this memo meanwhile).
        with memo.lock:
            return self._answer(key, model, image, settings, memo, inference())

    def _answer(self, key: Hashable, model: Any, image: Any, settings, memo: SharedMemo, slot) -> Any:
        trace = self.traces.get(key)  # another session may have answered it while this one waited
        if trace is None:
            with slot:
                trace = model.analyze(image, settings, memo)
            self.traces.put(key, trace)
        return trace


SERVER = Server()
"""The app process's one server."""
