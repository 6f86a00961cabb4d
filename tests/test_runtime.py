"""Several browser sessions share one model: inferences queue for a slot and run read-only."""

import os
import threading

import torch

from dynviz import runtime


def test_concurrent_analyses_queue_for_the_slot_and_run_in_inference_mode(cascade, photo, monkeypatch):
    net = cascade.nets["lite0"]
    running, peak, modes = [0], [0], []
    lock = threading.Lock()
    original = net.forward

    def watched(x):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        modes.append(torch.is_inference_mode_enabled())
        try:
            return original(x)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(net, "forward", watched)
    threads = [threading.Thread(target=cascade.analyze, args=(photo, {"tau_1": 0.0}, {})) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(modes) == 4 and all(modes)
    assert peak[0] == runtime.MAX_CONCURRENT == 1
    assert not any(p.requires_grad for p in cascade.parameters())  # shared weights are never trained


def test_an_inference_runs_on_one_thread_and_training_takes_every_core_only_while_it_runs():
    assert torch.get_num_threads() == runtime.INFERENCE_THREADS == 1
    with runtime.every_core():
        assert torch.get_num_threads() == (os.cpu_count() or 1)
    assert torch.get_num_threads() == 1
