"""Benchmark: what a page costs the visitor's browser, page by page (one Chromium session, loopback only).

    python bench/browser_cost.py [--repeats 3] [--out bench/browser_cost.txt]

The load test (bench/load.py) finds that with eight sessions on this machine a revisit waits for the
cores that the sessions' own browsers spend drawing their pages. This measures that drawing alone: one
session uploads a generated photo, visits every page once (the analyses are cached from then on), then
revisits each page ``--repeats`` times, coming from the Video page (nearly empty without a clip), and
prints the median CPU time of Chromium's renderers and of its other processes per revisit (counted from
the click until a second after the page has settled), and the time to settle. A revisit's server work is
a cached script run of about 0.1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import PAGES, VISIT_TIMEOUT_S, cpu_ticks, is_browser, photo, process_kind, settled  # noqa: E402
from dynviz.appserver import CHROMIUM, CHROMIUM_ARGS, running_app  # noqa: E402

RESTING_PAGE = "Video"
AFTERGLOW_S = 1.0
"""Counted after a page has settled: plotly finishes its drawing and the browser composites after the marker."""


def chromium_cpu_seconds() -> dict[str, float]:
    """CPU time of every Chromium process so far, renderers apart from the rest."""
    seconds = {"renderer": 0.0, "other": 0.0}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and is_browser(proc) and (ticks := cpu_ticks(proc)) is not None:
            seconds["renderer" if process_kind(proc) == "renderer" else "other"] += ticks / os.sysconf("SC_CLK_TCK")
    return seconds


async def visit(page, link: str) -> float:
    start = time.monotonic()
    await page.get_by_role("link", name=link, exact=True).click()
    await settled(page, PAGES[link])
    return time.monotonic() - start


async def measure(repeats: int) -> str:
    from playwright.async_api import async_playwright

    pages = [p for p in PAGES if p != RESTING_PAGE]
    lines = [f"one Chromium session, each page revisited {repeats} times from the {RESTING_PAGE} page; medians"]
    lines.append(f"{'page':<20}{'renderer':>10}{'other':>8}{'settled':>9}   (CPU-s of Chromium a revisit; s)")
    with running_app() as app, tempfile.TemporaryDirectory() as folder:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = await browser.new_context(viewport={"width": 1400, "height": 1600})
            page = await context.new_page()
            page.set_default_timeout(VISIT_TIMEOUT_S * 1000)
            await page.goto(app.url)
            sidebar = page.get_by_test_id("stSidebar")
            await sidebar.get_by_text("Source").wait_for()
            await sidebar.locator("label").filter(has_text="Upload").click()
            upload = Path(folder) / "browser-cost.jpg"
            upload.write_bytes(photo(3))
            await sidebar.locator("input[type=file]").set_input_files(upload)
            await sidebar.get_by_text(f"Analysing: {upload.name}").wait_for()
            for link in pages:  # first visits: the analyses, and each chart library's first load
                await visit(page, link)
            totals = {"renderer": 0.0, "other": 0.0}
            for link in pages:
                costs = []
                for _ in range(repeats):
                    await visit(page, RESTING_PAGE)
                    await asyncio.sleep(AFTERGLOW_S)
                    before = chromium_cpu_seconds()
                    took = await visit(page, link)
                    await asyncio.sleep(AFTERGLOW_S)
                    after = chromium_cpu_seconds()
                    costs.append((after["renderer"] - before["renderer"], after["other"] - before["other"], took))
                renderer, other, took = (statistics.median(c[i] for c in costs) for i in range(3))
                totals["renderer"] += renderer
                totals["other"] += other
                lines.append(f"{link:<20}{renderer:>10.2f}{other:>8.2f}{took:>9.2f}")
            await browser.close()
    lines.append(f"{'every page once':<20}{totals['renderer']:>10.2f}{totals['other']:>8.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = asyncio.run(measure(args.repeats))
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
