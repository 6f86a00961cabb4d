"""One real-browser smoke run: the app on a loopback port, Debian's Chromium driven by Playwright.

A user uploads a broken file and a good one: the broken one gets its one-line message, the good
one is analysed, and the early-exit page draws its chart and the FLOPs; every page is walked, and
at the end a clip is uploaded and the Video page answers and plays it back annotated; nothing the
pages load comes from another host. Skips with a reason where Chromium or Playwright is missing,
except under CI=true, where a skip would hide a broken app.
"""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import pytest
from conftest import encode, pattern

from dynviz.appserver import CHROMIUM, CHROMIUM_ARGS, running_app
from dynviz.clips import shot, write_clip


def missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser test must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def served():
    with running_app() as app:
        yield app


def test_in_chromium_an_upload_shows_the_exit_chart_its_card_the_gallery_the_gates_the_spatial_deformable_compare_and_video_pages(
    served, tmp_path
):
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -r requirements.txt)")

    broken, good = tmp_path / "broken.jpg", tmp_path / "my photo.png"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    good.write_bytes(encode(pattern(320, 240, seed=7), "PNG"))
    clip = tmp_path / "pan.mp4"
    write_clip(shot(pattern(320, 240, seed=7), 24, (160, 120), random.Random(0)), clip)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(120_000)
        outside = []  # nothing the app asks for may leave the server it came from (a closed network refuses it)

        def note_outside(request) -> None:
            if not request.url.startswith((served.url, "data:", "blob:")):
                outside.append(request.url)

        page.on("request", note_outside)
        page.goto(served.url)
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text("Source")).to_be_visible(timeout=120_000)  # the first script run has finished
        page.get_by_role("link", name="Early exit").click()
        main = page.get_by_test_id("stMain")
        # The page switch must have finished before the upload's rerun: on a busy machine a rerun requested
        # while the new page's first run is still going can land on the old page.
        expect(main.get_by_text("Early exit: stop as soon as it is sure")).to_be_visible(timeout=120_000)
        sidebar.locator("label").filter(has_text="Upload").click()
        sidebar.locator("input[type=file]").set_input_files([broken, good])
        expect(sidebar.get_by_text("broken.jpg: ")).to_be_visible(timeout=120_000)
        expect(main.get_by_text("Where did it stop?")).to_be_visible(timeout=120_000)
        expect(main.get_by_text("FLOPs (multiply–adds)").first).to_be_visible(timeout=120_000)
        expect(main.get_by_text("of 0.86 G static")).to_be_visible(timeout=120_000)
        time.sleep(2)  # let plotly finish drawing before the picture
        page.screenshot(path=os.environ.get("DYNVIZ_SCREENSHOT", str(tmp_path / "early_exit.png")), full_page=True)
        main.get_by_text("Model card").click()  # built only once opened: the click must bring it
        expect(main.get_by_text("Measured on").first).to_be_visible(timeout=60_000)
        page.get_by_role("link", name="Easy vs hard").click()  # MSDNet on the bundled CIFAR-10 sample
        expect(main.get_by_text("Where did the images leave?")).to_be_visible(timeout=180_000)
        expect(main.get_by_text("Which exit does each class take?")).to_be_visible(timeout=60_000)
        page.get_by_role("link", name="Layer skipping").click()  # the uploaded photo, through Lite0's gates
        expect(main.get_by_text("Which blocks ran?")).to_be_visible(timeout=120_000)
        page.get_by_role("link", name="Channel selection").click()
        expect(main.get_by_text("Which channels ran, layer by layer?")).to_be_visible(timeout=120_000)
        page.get_by_role("link", name="Spatial").click()  # pixel masks, glance and focus, resolution
        expect(main.get_by_text("How sparse was each block?")).to_be_visible(timeout=120_000)
        main.get_by_text("Regions (GFNet: glance and focus)").click()
        expect(main.get_by_text("Where did it look?").first).to_be_visible(timeout=120_000)
        page.get_by_role("link", name="Deformable").click()  # DCN's sampling points on the uploaded photo
        expect(main.get_by_text("The field view:")).to_be_visible(timeout=120_000)
        page.get_by_role("link", name="Dynamic parameters").click()  # CondConv's routing of the uploaded photo
        expect(main.get_by_text("Each row is one CondConv layer")).to_be_visible(timeout=120_000)
        page.get_by_role("link", name="Compare").click()  # the upload through every model
        expect(main.get_by_text("How much did each family save on this input?")).to_be_visible(timeout=180_000)
        table = main.get_by_test_id("stDataFrame")
        expect(table).to_be_visible(timeout=60_000)
        time.sleep(1)  # the grid draws its rows on a canvas after it is shown
        box = table.bounding_box()
        page.mouse.click(box["x"] + 16, box["y"] + 35 + 46)  # the first row's selection box: that model's page
        expect(main.get_by_text("Compare: one photo through every model")).to_be_hidden(timeout=120_000)
        titles = ("Early exit:", "Layer skipping:", "Channel selection:", "Spatial:")
        expect(main.locator("h1").filter(has_text=re.compile("|".join(titles)))).to_be_visible(timeout=120_000)

        page.get_by_role("link", name="Video").click()  # a clip of one's own: uploaded, decoded, played back
        expect(main.get_by_text("Choose a video in the sidebar")).to_be_visible(timeout=120_000)
        sidebar.locator("input[type=file]").set_input_files([clip])
        sidebar.get_by_test_id("stSelectbox").filter(has_text="Analyse").click()
        page.get_by_role("option", name="pan.mp4").click()
        expect(main.get_by_text("Which frames did the glance find most telling?")).to_be_visible(timeout=180_000)
        expect(main.get_by_text("What did the clip cost?")).to_be_visible(timeout=60_000)
        page.wait_for_function(  # the annotated clip is a WebM that this Chromium decodes
            "() => { const v = document.querySelector('video'); return v && v.readyState >= 1 && v.duration > 0 }",
            timeout=120_000,
        )
        browser.close()
    assert not outside, f"the app asked another host for {outside[:3]}"
    walked = {"Early exit", "Easy vs hard", "Layer skipping", "Channel selection", "Spatial", "Deformable", "Video"}
    assert walked <= {run.page for run in served.reruns()}  # each script run's server time, for bench/load.py
