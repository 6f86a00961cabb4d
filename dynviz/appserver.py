"""The app on a loopback port, and Debian's Chromium to drive it: for the browser test and bench/load.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    # Without the networking switches Chromium keeps dialling Google's hosts, which a closed network refuses.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class ScriptRun:
    """One run of the app's script, as ``runtime.timed_rerun`` logged it."""

    page: str
    seconds: float
    ended: float
    """Wall clock (``time.time()``): a browser's visit is paired with the run that ended within it."""


def script_runs(log: Path) -> list[ScriptRun]:
    """The runs ``runtime.timed_rerun`` has logged to ``log``, in the order they ended."""
    if not log.exists():
        return []
    fields = (line.split("\t") for line in log.read_text().splitlines())
    return [ScriptRun(page, float(seconds), float(ended)) for page, seconds, ended in fields]


@dataclass(frozen=True)
class RunningApp:
    url: str
    process: subprocess.Popen
    started_in_s: float
    """From launching the server to its health check answering."""
    log: Path
    """Everything the server has printed (a file: a pipe nobody reads would block the server once full)."""
    rerun_log: Path
    """Each script run's page and wall time (``runtime.timed_rerun``)."""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def reruns(self) -> list[ScriptRun]:
        """Every script run so far, in the order they ended."""
        return script_runs(self.rerun_log)

    def wait_for_output(self, text: str, timeout_s: float) -> float:
        """Seconds until the server has printed ``text``; TimeoutError after ``timeout_s``."""
        start = time.monotonic()
        while text not in self.output():
            if self.process.poll() is not None or time.monotonic() - start > timeout_s:
                raise TimeoutError(f"the server did not print {text!r}: {self.output()[-2000:]}")
            time.sleep(0.2)
        return time.monotonic() - start


@contextmanager
def running_app(timeout_s: float = 90) -> Iterator[RunningApp]:
    """``streamlit run app.py`` on a free loopback port until the block ends."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        log, rerun_log = Path(folder) / "server.log", Path(folder) / "reruns.tsv"
        start = time.monotonic()
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
                + ["--server.address", "127.0.0.1", "--server.headless", "true"],
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=os.environ | {"DYNVIZ_RERUN_LOG": str(rerun_log)},
            )
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() - start > timeout_s:
                        output = log.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"streamlit did not start: {output}") from None
                    time.sleep(0.2)
            yield RunningApp(url, server, time.monotonic() - start, log, rerun_log)
        finally:
            server.terminate()
            server.wait(timeout=20)
