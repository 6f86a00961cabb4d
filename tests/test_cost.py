import pytest
import torch

from dynviz.cost import count_macs, module_macs
from dynviz.models.efficientnet_lite import efficientnet_lite
from dynviz.units import spent_of_full

EVERY_EXIT = {0: {"tau_1": 0.0}, 1: {"tau_1": 1.01, "tau_2": 0.0}, 2: {"tau_1": 1.01, "tau_2": 1.01}}


def test_lite0_at_224_costs_the_published_0_385_g_multiply_adds():
    # Reference fact: FlopCounterMode counts 0.77 GFLOP = 2 per multiply-add.
    macs = module_macs(efficientnet_lite("lite0"), (1, 3, 224, 224))
    assert macs == pytest.approx(0.385e9, rel=0.01)


@pytest.mark.parametrize("exit_index", EVERY_EXIT)
def test_accounting_matches_flop_counter_on_the_executed_path(cascade, photo, exit_index):
    cascade.analyze(photo)  # measure static part costs first, outside the counter
    traces = []
    counted = count_macs(lambda: traces.append(cascade.analyze(photo, EVERY_EXIT[exit_index], memo={})))
    trace = traces[0]
    assert trace.summary()["exit"] == exit_index
    assert trace.cost.flops == counted
    assert sum(trace.cost.breakdown.values()) == counted


def test_exits_are_monotone_in_cost(cascade, photo):
    records = cascade.analyze(photo, EVERY_EXIT[2]).records
    cumulative = [r.flops_cumulative for r in records]
    assert cumulative == sorted(cumulative) and len(set(cumulative)) == len(cumulative)
    spent = [cascade.analyze(photo, settings).cost.flops for settings in EVERY_EXIT.values()]
    assert spent == sorted(spent)


def test_full_cost_is_the_static_lite2_and_baselines_include_lite0(cascade, photo):
    cost = cascade.analyze(photo).cost
    assert cost.flops_full == cost.baselines["lite2"] == module_macs(cascade.nets["lite2"], (1, 3, 260, 260))
    assert cost.baselines["lite0"] == pytest.approx(0.385e9, rel=0.01)


def test_cost_text_puts_the_static_reference_beside_the_spent_cost():
    assert spent_of_full(0.21e9, 0.86e9) == "0.21 G of 0.86 G FLOPs (24%)"


def test_module_costs_are_measured_once_per_shape():
    net, runs = torch.nn.Linear(8, 4), []
    net.register_forward_hook(lambda *_: runs.append(1))
    assert module_macs(net, (1, 8)) == 32
    assert module_macs(net, (1, 8)) == 32
    assert module_macs(net, (2, 8)) == 64
    assert len(runs) == 2


@pytest.mark.parametrize("shape", [(2, 3, 5, 8), (1, 4, 65, 32)])
def test_fused_attention_costs_what_its_explicit_products_cost(shape):
    """The CPU's fused scaled_dot_product_attention, which FlopCounterMode alone prices at 0 (for all but the
    smallest shapes), is priced as Q Kᵀ and the weighted sum of V."""
    q, k, v = torch.randn(shape), torch.randn(shape), torch.randn(*shape[:-1], 6)
    explicit = count_macs(lambda: (q @ k.transpose(-2, -1)).softmax(-1) @ v)
    n, heads, length, width = shape
    assert explicit == n * heads * length * length * (width + 6)
    with torch.inference_mode():
        assert count_macs(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)) == explicit
