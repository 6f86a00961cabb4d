"""Several browser sessions share one model through the serving layer: inferences queue for a slot and run
read-only, each (model, input) keeps one memo that concurrent analyses never interleave on, and an answer
already given is not recomputed."""

import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import encode, pattern

from dynviz import runtime
from dynviz.appserver import ScriptRun, script_runs
from dynviz.inputs import load_image
from dynviz.models.msdnet import MSDNet, MSDNetClassifier, MSDNetConfig
from dynviz.runtime import Server

REPOSITORY = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def tiny_msdnet() -> MSDNetClassifier:
    torch.manual_seed(0)
    config = MSDNetConfig.tiny()
    points = {"deep": (1.0,) * (config.exits - 1)}
    return MSDNetClassifier(MSDNet(config).eval(), torch.ones(config.exits), points, "deep")


def watch_forward(net, monkeypatch) -> tuple[list[int], list[bool]]:
    """Replace ``net.forward`` by one that records how many run at once (peak) and in which autograd mode; the
    eager modules run (``DYNVIZ_COMPILE=0``), whose forward is called."""
    monkeypatch.setenv("DYNVIZ_COMPILE", "0")
    running, peak, modes = [0], [0], []
    lock = threading.Lock()
    original = net.forward

    def watched(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        modes.append(torch.is_inference_mode_enabled())
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(net, "forward", watched)
    return peak, modes


def test_concurrent_analyses_queue_for_the_slot_and_run_in_inference_mode(cascade, monkeypatch):
    peak, modes = watch_forward(cascade.nets["lite0"], monkeypatch)
    server = Server()
    photos = [load_image(encode(pattern(seed=i), "PNG"), f"{i}.png") for i in range(4)]
    threads = [
        threading.Thread(target=server.analyze, args=("lite_cascade", cascade, photo, {"tau_1": 0.0}))
        for photo in photos
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(modes) == 4 and all(modes)
    assert peak[0] == runtime.MAX_CONCURRENT == 1
    assert not any(p.requires_grad for p in cascade.parameters())  # shared weights are never trained


def test_an_answer_already_given_is_not_recomputed_and_other_settings_reuse_the_memo(cascade, photo, monkeypatch):
    server = Server()
    first = server.analyze("lite_cascade", cascade, photo, {"tau_1": 1.0, "tau_2": 1.0})  # every stage runs
    peak, modes = watch_forward(cascade.nets["lite0"], monkeypatch)
    assert server.analyze("lite_cascade", cascade, photo, {"tau_2": 1.0, "tau_1": 1.0}) is first
    defaults = {knob.name: knob.default for knob in cascade.knobs()}
    assert server.analyze("lite_cascade", cascade, photo, defaults) is server.analyze("lite_cascade", cascade, photo)
    decided_again = server.analyze("lite_cascade", cascade, photo, {"tau_1": 0.0})
    assert modes == []  # neither the revisit nor the new thresholds ran a network
    assert decided_again.settings["tau_1"] == 0.0 and decided_again is not first


def test_two_sessions_analysing_one_photo_at_different_settings_each_get_their_own_answer(tiny_msdnet):
    """The race of the load test: MSDNet's memo holds the deepest block's features, which an analysis at other
    thresholds replaced mid-way ('expected input[1, 52, 32, 32] to have 70 channels')."""
    exits = tiny_msdnet.net.config.exits
    photos = [load_image(encode(pattern(32, 32, seed=i), "PNG"), f"{i}.png") for i in range(6)]
    settings = [{f"tau_{k + 1}": (0.0 if k == stop else 1.0) for k in range(exits - 1)} for stop in range(exits - 1)]
    expected = {
        (photo.digest, i): Server().analyze("tiny", tiny_msdnet, photo, s).summary()
        for photo in photos
        for i, s in enumerate(settings)
    }
    server, answers, errors = Server(), {}, []

    def session(i: int) -> None:
        try:
            for photo in photos:
                answers[(photo.digest, i)] = server.analyze("tiny", tiny_msdnet, photo, settings[i]).summary()
        except Exception as error:  # noqa: BLE001 - the test reports any
            errors.append(error)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(len(settings))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    drop = ("latency_ms",)
    assert {k: {f: v for f, v in a.items() if f not in drop} for k, a in answers.items()} == {
        k: {f: v for f, v in a.items() if f not in drop} for k, a in expected.items()
    }


def test_the_caches_are_bounded():
    cache = runtime.BoundedCache(3)
    for i in range(10):
        cache.put(i, str(i))
    assert len(cache) == 3 and cache.get(0) is None and cache.get(9) == "9"


def test_a_cache_of_heavy_items_keeps_fewer_of_them_and_always_the_newest():
    cache = runtime.BoundedCache(10, weight=len)
    for i in range(5):
        cache.put(i, "x" * 4)
    assert len(cache) == 2 and cache.get(4) == "xxxx"
    cache.put("big", "y" * 50)  # heavier than the whole budget: kept alone, until the next item
    assert len(cache) == 1 and cache.get("big")
    cache.put("small", "z")
    assert len(cache) == 1 and cache.get("small") == "z"


def test_an_answer_s_weight_counts_its_recorded_values(photo):
    from conftest import tiny

    with runtime.inference():
        sampled = tiny("dcn_resnet_cifar").analyze(photo)
        static = tiny("resnet20_cifar").analyze(photo)
    assert static.values() == 1
    points = sum(len(r.points) for r in sampled.records)
    assert sampled.values() > 2 * points  # the regular grid and the sampled points, with their modulation


def test_an_inference_runs_on_one_thread_and_training_takes_every_core_only_while_it_runs(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with runtime.inference():
        assert torch.get_num_threads() == runtime.INFERENCE_THREADS
    with runtime.every_core():
        assert torch.get_num_threads() == (os.cpu_count() or 1)
    assert torch.get_num_threads() == runtime.INFERENCE_THREADS
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two trainings side by side, a thread each
    with runtime.every_core():
        assert torch.get_num_threads() == 1


FAULTS_OF_LATER_STEPS = """
import resource, torch
from dynviz.runtime import reuse_freed_memory
{call}
for step in range(16):  # a block of 64 MiB freed at once, as a step's activations are: the heap settles
    torch.ones(16 << 20)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(8):
    torch.ones(16 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_a_training_process_reuses_a_freed_batch_without_faulting_its_pages_in_again():
    """The train command's allocator: the kernel no longer hands out (and zeroes) every page of every large
    block afresh, which took a Lite0 distillation more CPU time than its arithmetic."""

    def faults(call: str) -> int:
        script = FAULTS_OF_LATER_STEPS.format(call=call)
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPOSITORY)
        return int(run.stdout)

    assert faults("") >= 8 * 16_384  # 16,384 pages of 4 KiB a step: glibc mmaps such a block, unmaps it when freed
    assert faults("reuse_freed_memory()") < 16_384  # not one block's pages in eight steps


def test_background_work_waits_while_a_visitor_waits_for_the_slot():
    slots, order = runtime.Slots(1), []

    def hold(name: str, background: bool) -> None:
        with slots.hold(background):
            order.append(name)

    with slots.hold():  # a request is running; then background work and a visitor queue up, in that order
        background = threading.Thread(target=hold, args=("background", True))
        background.start()
        time.sleep(0.05)
        visitor = threading.Thread(target=hold, args=("visitor", False))
        visitor.start()
        while not slots.visitors_waiting:  # the visitor is waiting now
            time.sleep(0.01)
    background.join()
    visitor.join()
    assert order == ["visitor", "background"]


def test_a_script_run_logs_its_page_time_and_end_even_when_the_page_stops_early(tmp_path, monkeypatch):
    log = tmp_path / "reruns.tsv"
    monkeypatch.setenv("DYNVIZ_RERUN_LOG", str(log))
    before = time.time()
    with runtime.timed_rerun("Early exit"):
        time.sleep(0.01)
    with pytest.raises(RuntimeError), runtime.timed_rerun("Compare"):  # as st.stop() leaves a page
        raise RuntimeError("stopped")
    after = time.time()
    early_exit, compare = script_runs(log)
    assert (early_exit.page, compare.page) == ("Early exit", "Compare") and early_exit.seconds >= 0.01
    # bench/load.py pairs a browser's visit with the run that ended while it waited, by the wall clock
    assert before <= early_exit.ended <= compare.ended <= after + 1e-6  # the log keeps microseconds
    monkeypatch.delenv("DYNVIZ_RERUN_LOG")
    with runtime.timed_rerun("Home"):
        pass
    assert len(script_runs(log)) == 2  # nothing logged without the variable


def test_the_load_test_pairs_a_visit_with_the_run_its_click_started():
    from bench.load import Visit

    visit = Visit(session=0, page="Compare", started_s=0.0, took_s=2.0, first=False, clicked=100.0)
    runs = [
        ScriptRun("Compare", 0.5, 99.9),  # ended before the click: an earlier visit's
        ScriptRun("Spatial", 0.1, 100.2),  # another page
        ScriptRun("Compare", 1.5, 101.6),  # started 0.1 s after the click: this visit's
        ScriptRun("Compare", 0.2, 101.9),  # another session's, started 1.7 s after the click
        ScriptRun("Compare", 0.1, 104.0),  # after the visit
    ]
    assert visit.script_run(runs) == runs[2]
    assert visit.script_run(runs[:2]) is None


def test_a_picked_photo_is_answered_by_every_image_model_in_the_background(monkeypatch):
    from conftest import tiny

    from dynviz import warmup

    names = ["msdnet_cifar", "skip_resnet_cifar"]
    monkeypatch.setattr(warmup, "list_models", lambda accepting: names)
    server = Server(build=tiny)
    image = load_image(encode(pattern(64, 48, seed=3), "PNG"), "picked.png")
    assert not any(server.answered(name, server.model(name), image) for name in names)
    warmup.start_prefetch(server, image).join(timeout=120)
    assert all(server.answered(name, server.model(name), image) for name in names)


def test_a_visitor_asking_for_what_background_work_waits_to_compute_is_not_held_behind_it(tiny_msdnet):
    server, finished = Server(), []
    image = load_image(encode(pattern(seed=5), "PNG"), "5.png")

    def ask(who: str, background: bool) -> None:
        server.analyze("msdnet_cifar", tiny_msdnet, image, None, background=background)
        finished.append(who)

    with runtime._slots.hold():  # another visitor's inference is running; the prefetch of this photo queues first
        prefetch = threading.Thread(target=ask, args=("prefetch", True))
        prefetch.start()
        time.sleep(0.05)
        visitor = threading.Thread(target=ask, args=("visitor", False))
        visitor.start()
        deadline = time.monotonic() + 10
        while not runtime._slots.visitors_waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        waits_for_the_slot = runtime._slots.visitors_waiting == 1  # not for a memo the prefetch holds
    prefetch.join()
    visitor.join()
    assert waits_for_the_slot and finished == ["visitor", "prefetch"]
