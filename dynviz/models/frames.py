"""What the temporal-wise dynamic models (survey §5) share: one frame through a backbone, memoised per clip,
the clip's answer from per-frame answers, and the trace of a clip.

A clip's cost is compared with the static network run on every frame (the all-frames baseline), so a model
that looks at 3 frames of 300 spends 1% of it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dynviz.models.base import Memo, prediction_from_probabilities
from dynviz.models.efficientnet_lite import EfficientNetLite, ViewOutput, run_view
from dynviz.trace import Cost, FrameRecord, Prediction, Trace
from dynviz.video import InputVideo


def frame_view(net: EfficientNetLite, video: InputVideo, index: int, resolution: int, memo: Memo) -> ViewOutput:
    """``net`` on the centre crop of frame ``index`` at ``resolution``², once per clip: later knob settings
    reuse it from ``memo``."""
    key = ("frame", index, resolution)
    if key not in memo:
        memo[key] = run_view(net, video.frame(index).image, resolution)
    return memo[key]


def coarse_to_fine(frames: int) -> list[int]:
    """Every frame index once, coarse to fine: the middle frame, then the quarters, the eighths, …, so that
    the first few frames visited already span the clip (FrameExit's deterministic sampling policy)."""
    order, seen, depth = [], set(), 1
    while len(order) < frames:
        for numerator in range(1, 2**depth, 2):  # the new points of this level: 1/2; 1/4, 3/4; 1/8, 3/8, …
            index = min(frames - 1, numerator * frames // 2**depth)
            if index not in seen:
                seen.add(index)
                order.append(index)
        depth += 1
    return order


@dataclass(frozen=True)
class Look:
    """One frame looked at by a model that stops when sure."""

    index: int
    step: int
    """1 for the first frame looked at."""
    logits: torch.Tensor
    confidence: float
    """c_t: the calibrated confidence of the clip's answer once this frame was seen."""


def look_until_sure(
    order: Sequence[int],
    logits_of: Callable[[int, int], torch.Tensor],
    temperature: float,
    tau: float,
    budget: int,
) -> tuple[list[Look], torch.Tensor]:
    """FrameExit's rule: look at frames in ``order`` (``logits_of(index, step)``), keep the mean of their logits
    z̄_t, and stop at the first t whose calibrated confidence c_t = max softmax(z̄_t / T) reaches τ, or at the
    budget. Returns the frames looked at and the clip's answer, softmax(z̄_t / T)."""
    looks: list[Look] = []
    evidence = torch.zeros(())
    for step, index in enumerate(order[:budget], 1):
        logits = logits_of(index, step)
        evidence = evidence + logits
        confidence = float((evidence / step / temperature).softmax(-1).max())
        looks.append(Look(index, step, logits, confidence))
        if confidence >= tau:
            break
    return looks, (evidence / len(looks) / temperature).softmax(-1)


def mean_prediction(predictions: Sequence[Prediction], labels: tuple[str, ...]) -> Prediction:
    """The clip's answer from its frames' answers: the mean of their probabilities (each frame's top
    classes, as its trace holds them)."""
    totals = torch.zeros(len(labels))
    for prediction in predictions:
        for top in prediction.top:
            totals[top.index] += top.probability
    return prediction_from_probabilities(totals / len(predictions), labels)


def clip_trace(
    name: str,
    video: InputVideo,
    answer: Prediction,
    records: Sequence[FrameRecord],
    frame_flops: float,
    baseline: str,
    latency_ms: float,
    settings: dict[str, float],
    breakdown: dict[str, float],
) -> Trace:
    """A clip's trace: what the frames cost against ``baseline`` (``frame_flops`` each) on every frame."""
    all_frames = frame_flops * video.frame_count
    cost = Cost(
        sum(r.flops for r in records), all_frames, breakdown, latency_ms, {f"{baseline} on every frame": all_frames}
    )
    return Trace(name, video.name, video.size, answer, cost, tuple(records), settings, video.notes)
