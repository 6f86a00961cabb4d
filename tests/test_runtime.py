"""Several browser sessions share one model: inferences queue for a slot and run read-only."""

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
