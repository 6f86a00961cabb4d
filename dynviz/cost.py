"""Cost accounting: one mechanism for every model.

Static costs of parts are measured once per input shape with PyTorch's own
``FlopCounterMode`` and cached; dynamic decisions add up the parts that ran.
FlopCounterMode counts 2 FLOPs per multiply–add (convolutions, depthwise too,
and matrix products; not pooling, norms, activations, softmax or routing's
top-k); we report multiply–accumulates, the unit the dynamic-network papers
call "FLOPs". Its gaps that matter here get a formula in :data:`FORMULAS`
(matrix–vector products; bilinear sampling at learned points and, on the CPU,
``scaled_dot_product_attention``, which it prices at 0), passed to every
counter this project makes (:func:`flop_counter`) rather than registered
process-wide on import. The routing of experts and kernels costs its linear
layers (counted); its softmax, sigmoid and top-k are element-wise, like
activations, and cost nothing here.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dynviz import native


def _matrix_vector_flops(bias_shape, matrix_shape, vector_shape, *args, **kwargs) -> int:
    """FlopCounterMode prices matrix–matrix products only; the gates run theirs as matrix–vector products at
    batch size 1 (:meth:`dynviz.models.gates.Gate.logits_of_one`), and those count as much."""
    rows, columns = matrix_shape
    return 2 * rows * columns


BILINEAR_MACS = 4
"""Multiply–accumulates of one bilinear sample, per channel: its four neighbours, weighted."""


def _bilinear_sampling_flops(input_shape, grid_shape, interpolation_mode, *args, out_shape, **kwargs) -> int:
    """FlopCounterMode prices ``grid_sample`` at 0; deformable convolution and deformable attention read their
    inputs with it at learned points: :data:`BILINEAR_MACS` per channel and sampled point (nearest: 0)."""
    if interpolation_mode != 0:
        return 0
    n, channels, rows, columns = out_shape
    return 2 * BILINEAR_MACS * n * channels * rows * columns


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape, **kwargs) -> int:
    """On the CPU, ``scaled_dot_product_attention`` runs (for all but the smallest shapes) as one fused kernel
    that FlopCounterMode prices at 0: Q Kᵀ and the weighted sum of V, N·H·L_q·L_k·(d + d_v) multiply–adds
    (the softmax, like every element-wise step, is free)."""
    *batch, queries, width = query_shape
    keys, value_width = key_shape[-2], value_shape[-1]
    return 2 * math.prod(batch) * queries * keys * (width + value_width)


def _fused_convolution_flops(x_shape, *args, out_shape, **kwargs) -> int:
    """oneDNN's fused convolution (:mod:`dynviz.fused`), which FlopCounterMode prices at 0: a convolution's
    2 · out · (C_in / groups) · k_h · k_w, whatever it adds or activates in the same kernel. Both overloads
    share this formula: (x, W, b, padding, stride, dilation, groups, activation, …) and, adding a residual,
    (x, residual, W, b, padding, stride, dilation, groups, "add", …)."""
    adds_residual = isinstance(args[7], str)
    weight_shape = args[1] if adds_residual else args[0]
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def _gate_flops(x_shape, fc1_weight_shape, fc1_bias_shape, fc2_weight_shape, *args, **kwargs) -> int:
    """A gate as one operator (:mod:`dynviz.native`): its two matrix–vector products, as
    :func:`_matrix_vector_flops` prices them (pooling, like every reduction, is free)."""
    return _matrix_vector_flops(None, fc1_weight_shape, None) + _matrix_vector_flops(None, fc2_weight_shape, None)


def _mask_unit_flops(probabilities: torch.Tensor, unit_weight: torch.Tensor, unit_context: torch.Tensor) -> int:
    """DynConv's mask unit: its 3×3 convolution at every output position, its pooled term once."""
    return 2 * (probabilities.numel() * unit_weight.numel() + unit_context.numel())


def _dynconv_block_flops(
    x, unit_weight, unit_context, unit_bias, threshold, conv1_weight, conv1_bias, conv2_weight, *args, out_val, **kwargs
) -> int:
    """A DynConv basic block as one operator (:mod:`dynviz.native`): its mask unit, and each convolution at the
    positions it computed, which the operator returns (its weights are [k·k·C_in, C_out]: one multiply–add per
    weight and position)."""
    _, probabilities, counts = out_val
    computed_first, computed_second = counts.tolist()
    convolutions = computed_first * conv1_weight.numel() + computed_second * conv2_weight.numel()
    return _mask_unit_flops(probabilities, unit_weight, unit_context) + 2 * convolutions


def _dynconv_mbconv_flops(
    x,
    unit_weight,
    unit_context,
    unit_bias,
    threshold,
    expand_weight,
    expand_bias,
    depthwise_weight,
    depthwise_bias,
    project_weight,
    *args,
    out_val,
    **kwargs,
) -> int:
    """A DynConv MBConv block as one operator (:mod:`dynviz.native`): its mask unit, and the expansion (if any),
    the depthwise and the projection at the positions each computed (weights [C, E], [k·k, E], [E, C])."""
    _, probabilities, counts = out_val
    *expanded, depthwise, projected = counts.tolist()  # a block without expansion returns two counts
    convolutions = sum(expanded) * expand_weight.numel() + depthwise * depthwise_weight.numel()
    convolutions += projected * project_weight.numel()
    return _mask_unit_flops(probabilities, unit_weight, unit_context) + 2 * convolutions


# FlopCounterMode passes these the tensors: their cost depends on the values.
_dynconv_block_flops._get_raw = _dynconv_mbconv_flops._get_raw = True


def _channel_gated_block_flops(
    x,
    fc1_weight,
    fc1_bias,
    fc2_weight,
    fc2_bias,
    threshold,
    conv1_weight,
    conv1_bias,
    conv2_weight,
    *args,
    out_val,
    **kwargs,
) -> int:
    """A channel-gated basic block as one operator (:mod:`dynviz.native`): its gate, and both convolutions at
    the share of conv1's output channels that are on (conv1 computes them, conv2 reads them)."""
    out, probabilities = out_val
    active = int((probabilities >= threshold).sum())
    positions = out.shape[-2] * out.shape[-1]
    convolutions = (conv1_weight.numel() + conv2_weight.numel()) * positions * active // len(probabilities)
    return _gate_flops(None, fc1_weight.shape, None, fc2_weight.shape) + 2 * convolutions


_channel_gated_block_flops._get_raw = True


FORMULAS = {
    torch.ops.mkldnn._convolution_pointwise: _fused_convolution_flops,
    torch.ops.aten.addmv: _matrix_vector_flops,
    torch.ops.aten.grid_sampler_2d: _bilinear_sampling_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops,
}
"""FLOP formulas for the operations FlopCounterMode does not price (its own unit: 2 per multiply–add)."""


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that also prices :data:`FORMULAS`, and the C++ operators once they are loaded."""
    if not native.loaded():
        return FlopCounterMode(display=False, custom_mapping=FORMULAS)
    operators = {
        torch.ops.dynviz.gate_logits: _gate_flops,
        torch.ops.dynviz.dynconv_mbconv_block: _dynconv_mbconv_flops,
        torch.ops.dynviz.dynconv_basic_block: _dynconv_block_flops,
        torch.ops.dynviz.channel_gated_basic_block: _channel_gated_block_flops,
    }
    return FlopCounterMode(display=False, custom_mapping={**FORMULAS, **operators})


def count_macs(run: Callable[[], object]) -> int:
    """Multiply–accumulates of everything ``run`` executes, as FlopCounterMode sees it."""
    with flop_counter() as counter:
        run()
    return counter.get_total_flops() // 2


def macs_by_module(root: nn.Module, run: Callable[[], object]) -> dict[str, int]:
    """Multiply–accumulates of every submodule of ``root`` while ``run`` executes, by qualified name
    (``""`` for ``root`` itself): one FlopCounterMode pass prices every part of a network."""
    with flop_counter() as counter:
        run()
    prefix = type(root).__name__
    return {
        name.removeprefix(prefix).removeprefix("."): sum(ops.values()) // 2
        for name, ops in counter.get_flop_counts().items()
        if name == prefix or name.startswith(prefix + ".")
    }


def output_sides(modules: Sequence[nn.Module], run: Callable[[], object]) -> list[int]:
    """The side of each module's output feature map (its first call) while ``run`` executes."""
    sides: dict[int, int] = {}

    def record(i: int, output: torch.Tensor) -> None:  # a hook that returned a value would replace the output
        sides.setdefault(i, output.shape[-1])

    hooks = [
        module.register_forward_hook(lambda _m, _i, output, i=i: record(i, output)) for i, module in enumerate(modules)
    ]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return [sides[i] for i in range(len(modules))]


_measured: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], int]] = weakref.WeakKeyDictionary()
_measure_lock = threading.Lock()


def module_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The static cost of ``module`` on an input of ``input_shape``: measured once, then cached."""
    with _measure_lock:
        per_shape = _measured.setdefault(module, {})
        if input_shape not in per_shape:
            probe = torch.zeros(input_shape)
            with torch.inference_mode():
                per_shape[input_shape] = count_macs(lambda: module(probe))
        return per_shape[input_shape]


@dataclass
class Stopwatch:
    ms: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    watch = Stopwatch()
    start = time.perf_counter()
    try:
        yield watch
    finally:
        watch.ms = (time.perf_counter() - start) * 1000
