"""Small C++ operators for the executed paths (``ops.cpp``), built with the machine's compiler.

At batch size one a gate is six PyTorch operations (pooling, two matrix–vector products, ReLU, sigmoid,
reading the answer) of 3–7 µs each, 30 µs in all, for arithmetic that takes under 2 µs: with a gate in front
of every block that was a fifth of a skipping network's time on CIFAR. As one C++ operator it is one call.
The same holds for a whole gated block: DynConv's basic block and MBConv block (mask unit, gather,
product, scatter: about 25 calls, and the mask unit a convolution with one output channel, which oneDNN
runs 2–4× slower than a plain loop) and a channel-gated basic block, whose sliced 3×3 convolutions run in a
small direct kernel there, as oneDNN's computes 16 output channels at a time and a few active channels of
16–64 cost it nearly the dense price.

The operators are built by ``torch.utils.cpp_extension`` (gcc and ninja) in a background thread
(:func:`start`): the first build takes about a minute, later ones find it in :func:`build_directory` and take
a second; one process builds at a time (:func:`_sole_builder`). Until it is loaded, and where it cannot be
built (no compiler) or ``DYNVIZ_COMPILE=0``, the executed paths run the PyTorch operations, which compute the same
numbers (tests check both). The operators are registered with the dispatcher (``torch.ops.dynviz``), so
FlopCounterMode sees them; :data:`dynviz.cost.FORMULAS` prices them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from dynviz.runtime import compiled_paths_wanted, compiling_enabled

SOURCE = Path(__file__).with_name("ops.cpp")

_loaded = threading.Event()
_finished = threading.Event()
_starting = threading.Lock()
_builder: threading.Thread | None = None


def buildable() -> bool:
    """Whether the operators may be built: C++ may be compiled here (:func:`compiling_enabled`), with ninja
    (the ``ninja`` package's, which is on the PATH only in an activated virtual environment, or the system's)."""
    with contextlib.suppress(ImportError):
        import ninja

        if ninja.BIN_DIR not in os.environ["PATH"].split(os.pathsep):
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ["PATH"]
    return compiling_enabled() and shutil.which("ninja") is not None


def loaded() -> bool:
    """Whether the operators are loaded (``torch.ops.dynviz`` has them)."""
    return _loaded.is_set()


def ready() -> bool:
    """Whether the operators are loaded and may be used now (never waits for a build)."""
    return loaded() and compiled_paths_wanted()


def instruction_sets() -> str:
    """What ``-march=native`` compiles for: the processor's flags (Linux), else the vector instructions PyTorch
    found (AVX2, AVX512…)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line for line in lines if line.startswith("flags")), torch.backends.cpu.get_cpu_capability())


def build_directory() -> Path:
    """Where the operators are built: beside PyTorch's own extensions (``TORCH_EXTENSIONS_DIR``, by default
    ``~/.cache/torch_extensions``), a folder per PyTorch version, whose C++ interface they are built against,
    and per processor: a home folder may move to another machine, where operators built with the first one's
    AVX-512 would stop the process with an illegal instruction."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    processor = hashlib.sha256(instruction_sets().encode()).hexdigest()[:12]
    return Path(root) / f"dynviz_ops-torch{torch.__version__}-{processor}"


@contextlib.contextmanager
def _sole_builder(directory: Path) -> Iterator[None]:
    """Hold ``directory`` alone among processes. PyTorch's own lock is a file that its builder removes when done:
    a builder killed mid-build (a server stopped, a command that exits while its build thread runs) leaves it
    behind, and every later build then waits for it forever. An ``flock`` dies with its process, so under it any
    such file is stale. (Windows has no ``fcntl``: the build fails there, and PyTorch's operations serve.)"""
    import fcntl

    with open(directory / "builder.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        (directory / "lock").unlink(missing_ok=True)
        yield


def _build() -> None:
    try:
        from torch.utils.cpp_extension import load

        directory = build_directory()
        directory.mkdir(parents=True, exist_ok=True)
        with _sole_builder(directory):
            load(
                "dynviz_ops",
                [str(SOURCE)],
                extra_cflags=["-O3", "-march=native"],
                build_directory=str(directory),
                is_python_module=False,
            )
        _loaded.set()
    except Exception as error:  # noqa: BLE001 - any failure leaves the PyTorch operations in use
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"dynviz: the C++ operators were not built ({first_line}); using PyTorch's", file=sys.stderr)
    finally:
        _finished.set()


def start() -> None:
    """Build and load the operators in the background, once per process (nothing where compiling is disabled)."""
    global _builder
    with _starting:
        if _builder is None and buildable():
            _builder = threading.Thread(target=_build, name="dynviz-native-build", daemon=True)
            _builder.start()


def wait(timeout_s: float = 600) -> bool:
    """Start the build if needed and wait for it: whether the operators are loaded (benchmarks, tests)."""
    start()
    if _builder is not None:
        _finished.wait(timeout_s)
    return ready()
