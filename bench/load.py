"""Load test: a class of browser sessions using the app at once, on this machine, loopback only.

    python bench/load.py [--sessions 8] [--seconds 180] [--read 0] [--out bench/load.txt]

Starts the app (``streamlit run app.py`` on a free 127.0.0.1 port) and Debian's Chromium
(Playwright, one browser context per session, so each is its own Streamlit session). A first
visit starts the app's warm-up; the sessions join once it is done, as a class joins a server its
teacher opened before the lesson. Each session reads the landing page, uploads its own generated photo,
then walks every page in turn until the time is up, reading each page (the landing page included) before
the next click for ``--read`` seconds on average, drawn per page between half and one and a half times that
(0: a robot clicking as fast as the pages answer; a class reads a page for several seconds, not all for the
same time: with one fixed time, sessions that start together click together all through the run).
A page visit is timed from the click on its link until its marker chart is on screen and the
app has stopped running; visits are split into first visits (the session had not seen that
page with its input) and later ones. Prints:

- errors: pages that showed an exception, and visits that timed out (both must be 0);
- p50 / p95 page time, first and later visits (and the slowest of each, with their session, when they started
  and how long the server's script run for them took), and the server's script runs for each kind of visit (a
  visit is paired with the run of its page that ended while it waited); the upload's time to its first answer;
  the time from
  moving the Early-exit page's first threshold to the page showing where the input stops now, and to the first
  sign that the app took it (that, or its running indicator), with the script runs the moves started;
- the server's peak resident memory, sampled every 0.2 s;
- the CPU time a visit costs the server and the browser, and what that implies: the browsers run on this
  machine too, so with every session busy a visit takes sessions × CPU a visit / cores on average;
- cold start: from launching the server to the first page's input picker; the warm-up's time;
- a 12-megapixel upload answered by ``lite_cascade`` with the model warm;
- the memo race: two sessions analysing the same photo at different settings each get their
  own answer (threads on one serving layer, with MSDNet, whose memo holds features).

Every loop is bounded in count and time; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dynviz.appserver import CHROMIUM, CHROMIUM_ARGS, RunningApp, ScriptRun, running_app  # noqa: E402
from dynviz.warmup import WARMED_UP  # noqa: E402

PAGES = {  # link text → a text the page shows once its main chart is drawn
    "Compare": "How much did each family save on this input?",
    "Early exit": "Where did it stop?",
    "Layer skipping": "Which blocks ran?",
    "Channel selection": "Which channels ran, layer by layer?",
    "Spatial": "How sparse was each block?",
    "Deformable": "The field view:",
    "Dynamic parameters": "Each row is one CondConv layer",
    "Easy vs hard": "Where did the images leave?",
    "Trade-offs": "How much accuracy for how much computation?",
    "Video": "Choose a video in the sidebar",  # the sessions upload photos: the page asks for a clip
    "Home": "what a dynamic network chose to compute",
}
THRESHOLD_PAGE = "Early exit"
"""Where each session moves a threshold after its visit (:func:`moved_threshold`)."""
VISIT_TIMEOUT_S = 120
WARM_UP_TIMEOUT_S = 600


def photo(seed: int, width: int = 640, height: int = 480) -> bytes:
    """A generated photo-like JPEG: smooth colour fields and a few shapes, different per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([np.sin(6 * x * rng.uniform(0.5, 2)), np.cos(5 * y * rng.uniform(0.5, 2)), x * y], -1)
    pixels = ((base - base.min()) / np.ptp(base) * 255).astype(np.uint8)
    for _ in range(5):
        x0, y0 = rng.integers(0, width - 60), rng.integers(0, height - 60)
        pixels[y0 : y0 + rng.integers(20, 200), x0 : x0 + rng.integers(20, 200)] = rng.integers(0, 255, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@dataclass(frozen=True)
class Visit:
    session: int
    page: str
    started_s: float
    """When the click came, in seconds since the sessions started."""
    took_s: float
    first: bool
    """The session had not seen this page with its input before."""
    clicked: float
    """When the click came, wall clock (as the server logs its script runs)."""

    def script_run(self, runs: list[ScriptRun]) -> ScriptRun | None:
        return script_run_of(self.page, self.clicked, self.took_s, runs)


@dataclass(frozen=True)
class WidgetChange:
    feedback_s: float
    """Until the page shows the change's effect or the app's running indicator, whichever comes first."""
    effect_s: float
    """Until the page shows the change's effect."""
    moved: float
    """When the threshold moved, wall clock."""

    def script_run(self, runs: list[ScriptRun]) -> ScriptRun | None:
        return script_run_of(THRESHOLD_PAGE, self.moved, self.effect_s, runs)


def script_run_of(page: str, asked: float, waited_s: float, runs: list[ScriptRun]) -> ScriptRun | None:
    """The run of ``page`` that ended while the browser waited for it, or within a second after (the script logs
    its time after the page's last element: the prefetch of a new photo starts in between); of several (another
    session on the same page at once), the one that started nearest the moment asked."""
    during = [r for r in runs if r.page == page and asked <= r.ended <= asked + waited_s + 1]
    return min(during, key=lambda r: abs(r.ended - r.seconds - asked), default=None)


@dataclass
class Tally:
    start: float = field(default_factory=time.monotonic)
    visits: list[Visit] = field(default_factory=list)
    uploads: list[float] = field(default_factory=list)
    widget_changes: list[WidgetChange] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def visits_where(self, first: bool, page: str | None = None) -> list[Visit]:
        return [v for v in self.visits if v.first == first and page in (None, v.page)]

    def times(self, first: bool, page: str | None = None) -> list[float]:
        return [v.took_s for v in self.visits_where(first, page)]


async def settled(page, marker: str) -> None:
    """The marker is on screen and the app is not running any more."""
    main = page.get_by_test_id("stMain")
    await main.get_by_text(marker).first.wait_for(state="visible", timeout=VISIT_TIMEOUT_S * 1000)
    await page.get_by_test_id("stStatusWidget").wait_for(state="hidden", timeout=VISIT_TIMEOUT_S * 1000)


async def moved_threshold(page) -> WidgetChange:
    """Times from moving the Early-exit page's first threshold to one end until the page says where the input
    stops now (to 0, Home: every input stops at the first stage, if it went on, else to "never", End), and until
    the first sign that the app took the change (that, or its running indicator)."""
    main = page.get_by_test_id("stMain")
    at_first = main.get_by_test_id("stMetric").filter(has_text=re.compile(r"Stopped at stage\s*1 of"))
    first = not await at_first.count()
    status = page.get_by_test_id("stStatusWidget")
    start, moved = time.monotonic(), time.time()
    await main.get_by_test_id("stSlider").first.get_by_role("slider").press("Home" if first else "End")
    effect = asyncio.ensure_future(
        at_first.wait_for(state="visible" if first else "hidden", timeout=VISIT_TIMEOUT_S * 1000)
    )
    running = asyncio.ensure_future(status.wait_for(state="visible", timeout=VISIT_TIMEOUT_S * 1000))
    await asyncio.wait((effect, running), return_when=asyncio.FIRST_COMPLETED)
    feedback = time.monotonic() - start
    running.cancel()
    await effect
    took = time.monotonic() - start
    await status.wait_for(state="hidden", timeout=VISIT_TIMEOUT_S * 1000)
    return WidgetChange(feedback, took, moved)


async def failed(page) -> str | None:
    exceptions = page.get_by_test_id("stException")
    if await exceptions.count():
        return (await exceptions.first.inner_text()).splitlines()[0][:200]
    return None


async def session(browser, url: str, index: int, deadline: float, folder: Path, tally: Tally, read_s: float) -> None:
    reading = random.Random(index)

    async def read() -> None:
        await asyncio.sleep(read_s * reading.uniform(0.5, 1.5))

    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    page = await context.new_page()
    page.set_default_timeout(VISIT_TIMEOUT_S * 1000)
    upload = folder / f"session-{index}.jpg"
    upload.write_bytes(photo(index))
    try:
        await page.goto(url)
        sidebar = page.get_by_test_id("stSidebar")
        await sidebar.get_by_text("Source").wait_for(timeout=VISIT_TIMEOUT_S * 1000)
        await read()
        await sidebar.locator("label").filter(has_text="Upload").click()
        start = time.monotonic()
        await sidebar.locator("input[type=file]").set_input_files(upload)
        await sidebar.get_by_text(f"Analysing: {upload.name}").wait_for(timeout=VISIT_TIMEOUT_S * 1000)
        tally.uploads.append(time.monotonic() - start)
        seen: set[str] = set()
        order = list(PAGES)[index % len(PAGES) :] + list(PAGES)[: index % len(PAGES)]  # sessions spread out
        for visit in range(200):
            if time.monotonic() > deadline:
                break
            link = order[visit % len(order)]
            start, clicked = time.monotonic(), time.time()
            await page.get_by_role("link", name=link, exact=True).click()
            try:
                await settled(page, PAGES[link])
            except Exception as error:  # noqa: BLE001 - a timeout is a failure the report counts
                tally.errors.append(f"session {index}, {link}: {type(error).__name__}")
                continue
            took = time.monotonic() - start
            tally.visits.append(Visit(index, link, start - tally.start, took, link not in seen, clicked))
            seen.add(link)
            if link == THRESHOLD_PAGE:
                try:
                    tally.widget_changes.append(await moved_threshold(page))
                except Exception as error:  # noqa: BLE001 - as for a visit
                    tally.errors.append(f"session {index}, moving a threshold: {type(error).__name__}")
            if problem := await failed(page):
                tally.errors.append(f"session {index}, {link}: {problem}")
            await read()
    finally:
        await context.close()


class Usage(threading.Thread):
    """Sampled every 0.2 s until stopped: the server's peak resident memory (with its children), and the CPU
    time that the server and the browsers have used since :meth:`start_counting` (each process's last count
    is kept, so a browser process that has exited still counts)."""

    def __init__(self, server: int):
        super().__init__(daemon=True)
        self.server, self.peak, self.stopped = server, 0, threading.Event()
        self.ticks: dict[int, int] = {}
        self.kinds: dict[int, str] = {}
        self.baseline: dict[int, int] | None = None

    def start_counting(self) -> None:
        self.baseline = dict(self.ticks)

    def cpu_seconds(self, browsers: bool) -> float:
        """The browsers' CPU time, or the server's, since :meth:`start_counting`."""
        server = {self.server, *children(self.server)}
        baseline = self.baseline or {}
        ticks = sum(t - baseline.get(pid, 0) for pid, t in self.ticks.items() if (pid not in server) == browsers)
        return ticks / os.sysconf("SC_CLK_TCK")

    def browsers_by_kind(self) -> dict[str, tuple[float, int]]:
        """The browsers' CPU time since :meth:`start_counting` by Chromium's process kind (browser, renderer,
        gpu-process, utility, …): seconds and how many processes. Every session's context shares the one
        browser's browser and GPU processes, as a class's browsers (one per student) would not."""
        baseline, totals = self.baseline or {}, {}
        for pid, kind in self.kinds.items():
            seconds, count = totals.get(kind, (0.0, 0))
            spent = (self.ticks[pid] - baseline.get(pid, 0)) / os.sysconf("SC_CLK_TCK")
            totals[kind] = (seconds + spent, count + (spent > 0))
        return totals

    def sample(self) -> None:
        rss = 0
        for pid in [self.server, *children(self.server)]:
            rss += status_kib(pid, "VmRSS:") * 1024
        self.peak = max(self.peak, rss)
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and (int(proc.name) == self.server or is_browser(proc)):
                if (ticks := cpu_ticks(proc)) is not None:
                    self.ticks[int(proc.name)] = ticks
                    if int(proc.name) != self.server and int(proc.name) not in self.kinds:
                        self.kinds[int(proc.name)] = process_kind(proc)

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.sample()


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def is_browser(proc: Path) -> bool:
    try:
        return (proc / "comm").read_text().startswith("chrom")
    except OSError:
        return False


def process_kind(proc: Path) -> str:
    """Chromium's ``--type=`` of a process (renderer, gpu-process, utility, zygote); the browser process has none.
    Chromium's child processes rewrite their command line into one string, so it is split at spaces too."""
    try:
        arguments = (proc / "cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return "unknown"
    kinds = [a.decode().removeprefix("--type=") for a in arguments if a.startswith(b"--type=")]
    return kinds[0] if kinds else "browser"


def cpu_ticks(proc: Path) -> int | None:
    """User and system time of a process, in clock ticks. Not its waited-for children's: each child is sampled
    itself (and its last count kept once it exits), so adding them would count a browser's exited renderers
    twice."""
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def cold_start(browser, app: RunningApp) -> float:
    """Seconds from launching the server to the first page's input picker (which starts the warm-up)."""
    context = await browser.new_context()
    page = await context.new_page()
    start = time.monotonic()
    await page.goto(app.url)
    await page.get_by_test_id("stSidebar").get_by_text("Source").wait_for(timeout=VISIT_TIMEOUT_S * 1000)
    cold = app.started_in_s + time.monotonic() - start
    await context.close()
    return cold


async def server_ran(app: RunningApp, runs_before: int) -> None:
    """Until the server has finished a script run after the first ``runs_before``: the browser's status widget
    may not have shown a short run at all."""
    while len(app.reruns()) == runs_before:
        await asyncio.sleep(0.02)


async def big_upload(browser, app: RunningApp, folder: Path) -> float:
    """Seconds to answer a 12-MP upload on the Early-exit page (lite_cascade), the server warm: until the
    server has finished the script run that the upload started and the browser shows no run going on."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    page = await context.new_page()
    await page.goto(app.url)
    await page.get_by_role("link", name="Early exit", exact=True).click()
    await settled(page, PAGES["Early exit"])
    big = folder / "twelve-megapixels.jpg"
    big.write_bytes(photo(99, 4000, 3000))
    sidebar = page.get_by_test_id("stSidebar")
    runs = len(app.reruns())
    await sidebar.locator("label").filter(has_text="Upload").click()
    await server_ran(app, runs)
    await settled(page, PAGES["Early exit"])
    runs = len(app.reruns())
    start = time.monotonic()
    await sidebar.locator("input[type=file]").set_input_files(big)
    await sidebar.get_by_text(f"Analysing: {big.name}").wait_for(timeout=VISIT_TIMEOUT_S * 1000)
    await server_ran(app, runs)
    await settled(page, PAGES["Early exit"])
    answered = time.monotonic() - start
    await context.close()
    return answered


def memo_race() -> str:
    """Two threads, one photo, MSDNet at two settings, one serving layer: each must get its own answer."""
    from dynviz.inputs import load_image
    from dynviz.runtime import Server
    from dynviz.zoo import create_model

    model = create_model("msdnet_cifar")
    image = load_image(photo(7, 64, 64), "race.jpg")
    early = {f"tau_{k + 1}": 0.0 for k in range(len(model.knobs()))}
    late = {f"tau_{k + 1}": 1.0 for k in range(len(model.knobs()))}
    expected = {
        name: Server().analyze("msdnet_cifar", model, image, s).answered_at.index
        for name, s in (("early", early), ("late", late))
    }
    for attempt in range(20):
        server, answers = Server(), {}

        def ask(name: str, settings: dict[str, float]) -> None:
            answers[name] = server.analyze("msdnet_cifar", model, image, settings).answered_at.index

        threads = [threading.Thread(target=ask, args=pair) for pair in (("late", late), ("early", early))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if answers != expected:
            return f"FAILED on attempt {attempt + 1}: {answers} instead of {expected}"
    return f"ok (20 attempts; exits {expected['early'] + 1} and {expected['late'] + 1} as asked)"


def percentiles(values: list[float]) -> str:
    """Median and 95th percentile, interpolated between the visits measured: never beyond the slowest (the
    "exclusive" method extrapolates past it when there are fewer than 20 visits)."""
    if not values:
        return "no visits"
    p95 = statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]
    return f"p50 {statistics.median(values):5.1f} s   p95 {p95:5.1f} s   ({len(values)} visits)"


async def main_async(sessions: int, seconds: float, read_s: float) -> str:
    from playwright.async_api import async_playwright

    tally = Tally()
    with running_app() as app, tempfile.TemporaryDirectory() as folder:
        usage = Usage(app.process.pid)
        usage.start()
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            cold = await cold_start(browser, app)
            warm_up = await asyncio.to_thread(app.wait_for_output, WARMED_UP, WARM_UP_TIMEOUT_S)
            big = await big_upload(browser, app, Path(folder))
            usage.sample()
            usage.start_counting()
            reruns_before = len(app.reruns())
            tally.start = time.monotonic()
            deadline = tally.start + seconds
            await asyncio.gather(
                *(session(browser, app.url, i, deadline, Path(folder), tally, read_s) for i in range(sessions))
            )
            usage.sample()
            reruns = app.reruns()[reruns_before:]
            server_cpu, browsers_cpu = usage.cpu_seconds(browsers=False), usage.cpu_seconds(browsers=True)
            by_kind = usage.browsers_by_kind()
            await browser.close()
        usage.stopped.set()
    visits = max(1, len(tally.visits))

    def server_part(wait: Visit | WidgetChange) -> str:
        run = wait.script_run(reruns)
        return "no script run paired" if run is None else f"its script run {run.seconds:.1f} s"

    def slowest(first: bool) -> str:
        kept = sorted(tally.visits_where(first), key=lambda v: -v.took_s)[:8]
        return "  slowest: " + ", ".join(
            f"{v.page} {v.took_s:.1f} s (session {v.session}, at {v.started_s:.0f} s, {server_part(v)})" for v in kept
        )

    def script_runs(waits: list[Visit] | list[WidgetChange]) -> str:
        runs = [run.seconds for wait in waits if (run := wait.script_run(reruns))]
        return f"  their script runs on the server: {percentiles(runs)}" if runs else "  (no script run paired)"

    def slowest_moves() -> str:
        kept = sorted(tally.widget_changes, key=lambda c: -c.effect_s)[:6]
        return "  slowest: " + ", ".join(f"{c.effect_s:.1f} s ({server_part(c)})" for c in kept)

    per_visit = (server_cpu + browsers_cpu) / visits
    pace = (
        f"reading each page {read_s / 2:g}–{1.5 * read_s:g} s before the next click"
        if read_s
        else "clicking as soon as a page answers"
    )
    lines = [
        f"{sessions} sessions for {seconds:.0f} s, one uploaded photo each, walking {len(PAGES)} pages, {pace}",
        f"errors: {len(tally.errors)}" + "".join(f"\n  {e}" for e in tally.errors[:20]),
        f"first visit of a page: {percentiles(tally.times(first=True))}",
        slowest(first=True),
        script_runs(tally.visits_where(first=True)),
        f"later visits:          {percentiles(tally.times(first=False))}",
        slowest(first=False),
        script_runs(tally.visits_where(first=False)),
        f"upload to its answer:  {percentiles(tally.uploads)}",
        f"a threshold moved to its effect: {percentiles([c.effect_s for c in tally.widget_changes])}",
        f"  to its effect or the running indicator: {percentiles([c.feedback_s for c in tally.widget_changes])}",
        slowest_moves(),
        script_runs(tally.widget_changes),
        f"the server's part (a script run, clicks and threshold moves): {percentiles([r.seconds for r in reruns])}",
        "  slowest: " + ", ".join(f"{r.page} {r.seconds:.1f} s" for r in sorted(reruns, key=lambda r: -r.seconds)[:6]),
        "first visits by page:",
        *(f"  {page:<19}{percentiles(tally.times(True, page))}" for page in PAGES),
        f"server peak memory:    {usage.peak / 2**30:.2f} GiB",
        f"CPU time during the sessions: server {server_cpu:.0f} s ({1000 * server_cpu / visits:.0f} ms a visit), "
        f"browsers {browsers_cpu:.0f} s (of {os.cpu_count()} cores × {seconds:.0f} s = {os.cpu_count() * seconds:.0f} s)",
        "  the browsers' by process: "
        + ", ".join(
            f"{kind} {spent:.0f} s ({n})" for kind, (spent, n) in sorted(by_kind.items(), key=lambda k: -k[1][0])
        ),
        f"a visit costs {per_visit:.2f} CPU-s here, {browsers_cpu / visits:.2f} of them in its browser: with all "
        f"{sessions} sessions busy, a visit takes {sessions * per_visit / os.cpu_count():.1f} s on average "
        f"({sessions} × {per_visit:.2f} / {os.cpu_count()} cores)",
        f"cold start to an interactive page: {cold:.1f} s",
        f"start-up warm-up (every model, the examples, the galleries): {warm_up:.0f} s; the sessions joined after it",
        f"12-MP upload answered by lite_cascade, warm: {big:.1f} s",
        f"memo race: {memo_race()}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--read", type=float, default=0, help="mean seconds a session reads a page (default 0)")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = asyncio.run(main_async(args.sessions, args.seconds, args.read))
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
