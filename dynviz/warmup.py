"""What an app process computes in the background as it starts, so that the first visitors find it done:
every model loaded, the example photos through every model (the Compare page's default view and every
page's first answer), the bundled galleries of the exit models (the Easy-vs-hard page), and the example
clips through every video model (the Video page). All of it goes through the serving layer as background
work: it takes the inference slot only while no visitor waits for it. Beside it, the C++ operators of the
executed paths are built (:mod:`dynviz.native`). Later, each photo a visitor picks goes through every image
model the same way (:func:`prefetch`), while the visitor reads the page in front of them."""

from __future__ import annotations

import functools
import gc
import sys
import threading
import time
from collections.abc import Callable, Iterable

from dynviz import native
from dynviz.gallery import default_gallery, run_gallery
from dynviz.inputs import InputImage, load_image
from dynviz.runtime import Server
from dynviz.trace import ExitRecord
from dynviz.video import load_video
from dynviz.zoo import IMAGE, VIDEO, declared_records, list_models

WARMED_UP = "dynviz: warmed up"
"""What the server prints (stderr) once the warm-up is done."""

Files = Callable[[], Iterable[tuple[bytes, str]]]
"""(bytes, display name) of each example."""


def warm_up(server: Server, photos: Files, clips: Files = list) -> None:
    start = time.perf_counter()
    native.start()  # beside the warm-up: the executed paths use the operators once they are loaded
    models = {name: server.model(name) for name in list_models(accepting=IMAGE)}
    for data, name in photos():
        prefetch(server, load_image(data, name))
    for name, model in models.items():
        if ExitRecord in declared_records(name):
            default = model.operating_points()[model.default_point].settings
            analyze = functools.partial(server.analyze, name, model, background=True)
            run_gallery(model, default_gallery(model, photos), default, analyze)
    video_models = {name: server.model(name) for name in list_models(accepting=VIDEO)}
    for data, title in clips():
        video = load_video(data, title)
        for name, model in video_models.items():
            server.analyze(name, model, video, None, background=True)
    count = len(models) + len(video_models)
    # What is alive now (the libraries, the models, the examples' answers) lives as long as the server: out of
    # the collector's sight, a full collection walks only what sessions make, not every object of torch,
    # plotly and pandas (under load such a pass held every session for 0.2-0.4 s before, 0.04 s after).
    gc.freeze()
    print(f"{WARMED_UP} {count} models in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def prefetch(server: Server, image: InputImage) -> None:
    """``image`` through every image model at its default settings, as background work (a visitor waiting
    for the inference slot goes first): the pages opened next find their first answers computed."""
    for name in list_models(accepting=IMAGE):
        server.analyze(name, server.model(name), image, None, background=True)


def start_prefetch(server: Server, image: InputImage) -> threading.Thread:
    """:func:`prefetch` in a thread of its own, for an input a visitor has just picked."""
    thread = threading.Thread(target=prefetch, args=(server, image), name="dynviz-prefetch", daemon=True)
    thread.start()
    return thread


def start_warm_up(server: Server, photos: Files, clips: Files = list) -> threading.Thread:
    thread = threading.Thread(target=warm_up, args=(server, photos, clips), name="dynviz-warm-up", daemon=True)
    thread.start()
    return thread
