"""Layer skipping and channel gating on tiny, untrained networks: what is skipped is not computed, the sparse
executed path equals the masked dense one, decisions follow the knob, and the card's per-class rates."""

import numpy as np
import pytest
import torch
from conftest import encode, labelled_patterns, pattern, tiny_dynconv, tiny_lite

from dynviz.cost import count_macs
from dynviz.evaluate import evaluate
from dynviz.fused import inference_path
from dynviz.inputs import load_image
from dynviz.models.channel_gating import (
    ChannelGatedNetwork,
    ChannelGateResNetCifar,
    contributions,
    expanded_features,
    masked_block,
    salient,
)
from dynviz.models.dynconv import DynConvNetwork
from dynviz.models.gates import sample_decisions
from dynviz.models.resnet_cifar import ResNetCifar, StaticResNetCifar
from dynviz.models.skip import SkipNetwork, SkipResNetCifar
from dynviz.trace import BlockRecord, ChannelRecord, MaskRecord, Trace
from dynviz.train.losses import execution_rate_loss
from dynviz.zoo import ready_to_serve

THRESHOLDS = (0.05, 0.3, 0.5, 0.7, 0.95)


def varied_gates(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Untrained gates are input-independent (zero last layer): give them weights so decisions vary, and
    channels that are off a fill other than 0."""
    torch.manual_seed(seed)
    for gate in net.gates.values():
        torch.nn.init.normal_(gate.fc2.weight, std=2.0)
        torch.nn.init.normal_(gate.fc2.bias, std=1.0)
    for fill in net.fills.buffers() if isinstance(net, ChannelGatedNetwork) else ():
        fill.uniform_(0.0, 6.0)
    return net


@pytest.fixture(scope="module", params=["resnet", "mbconv"])
def skipping(request):
    backbone = tiny_lite() if request.param == "mbconv" else ResNetCifar(14)
    return ready_to_serve(SkipResNetCifar(varied_gates(SkipNetwork(backbone), 1)))  # CIFAR input, tiny backbone


@pytest.fixture(scope="module", params=["resnet", "mbconv"])
def channels(request):
    backbone = tiny_lite() if request.param == "mbconv" else ResNetCifar(14)
    return ready_to_serve(ChannelGateResNetCifar(varied_gates(ChannelGatedNetwork(backbone), 2)))


@pytest.fixture(scope="module")
def image():
    return load_image(encode(pattern(40, 32, seed=5), "PNG"), "tiny.png")


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_skipped_blocks_are_not_computed(skipping, image, threshold):
    settings = {"threshold": threshold}
    with torch.inference_mode():  # as the app runs every model
        counted = count_macs(lambda: skipping.analyze(image, settings))
        trace = skipping.analyze(image, settings)
    blocks = trace.records_of(BlockRecord)
    assert trace.cost.flops == counted == skipping.fixed_flops + sum(b.flops for b in blocks if b.executed)
    assert all(b.executed == (b.probability is None or b.probability >= threshold) for b in blocks)


def test_a_batch_runs_each_block_on_the_images_whose_gate_says_so(skipping):
    """The batched executed path (bench/gating.py's batch of 32) answers as each image alone would."""
    torch.manual_seed(3)
    x = torch.randn(8, 3, 32, 32) + torch.linspace(-4, 4, 8)[:, None, None, None]  # images far apart
    backbone = inference_path(skipping.net.backbone, (1, 3, 32, 32))
    with torch.inference_mode():
        probabilities = [skipping.net.run(x[i : i + 1], 0.5, backbone=backbone)[1] for i in range(len(x))]
        first = sorted(next(p for p in ps if p is not None) for ps in probabilities)
        threshold = (first[3] + first[4]) / 2  # half the images run the first gated block
        alone = [skipping.net.run(x[i : i + 1], threshold, backbone=backbone) for i in range(len(x))]
        batched = skipping.net.run_batch(x, threshold, backbone)
    assert len({tuple(executed) for _, _, executed in alone}) > 1  # the images took different paths
    torch.testing.assert_close(batched, torch.cat([backbone.classify(h) for h, _, _ in alone]), rtol=1e-4, atol=1e-4)


def test_raising_the_threshold_skips_more_blocks(skipping, image):
    with torch.inference_mode():  # as the app runs every model
        traces = [skipping.analyze(image, {"threshold": t}) for t in THRESHOLDS]
    executed = [sum(b.executed for b in t.records_of(BlockRecord)) for t in traces]
    assert executed == sorted(executed, reverse=True) and executed[0] > executed[-1]
    assert [t.cost.flops for t in traces] == sorted((t.cost.flops for t in traces), reverse=True)
    assert all(b.executed for b in traces[0].records_of(BlockRecord) if b.probability is None)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_skipped_channels_are_not_computed(channels, image, threshold):
    settings = {"threshold": threshold}
    with torch.inference_mode():
        counted = count_macs(lambda: channels.analyze(image, settings))
    trace = channels.analyze(image, settings)
    layers = trace.records_of(ChannelRecord)
    assert trace.cost.flops == counted
    for layer in layers:
        assert layer.flops == layer.flops_full * sum(layer.active) // len(layer.active)
        assert layer.active == tuple(p >= threshold for p in layer.probabilities)


def test_a_trace_gives_the_probability_behind_every_gated_decision(skipping, channels, image):
    """What the pages' "within θ's reach" counts: one probability per gated block or channel."""
    blocks = skipping.analyze(image).records_of(BlockRecord)
    gated = [b.probability for b in blocks if b.probability is not None]
    assert skipping.analyze(image).gate_probabilities() == gated and len(gated) < len(blocks)
    trace = channels.analyze(image)
    assert len(trace.gate_probabilities()) == trace.summary()["channels"]


def test_raising_the_threshold_switches_off_more_channels(channels, image):
    fractions = [channels.analyze(image, {"threshold": t}).summary()["active_channel_fraction"] for t in THRESHOLDS]
    assert fractions == sorted(fractions, reverse=True) and fractions[0] > fractions[-1]


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_the_executed_path_answers_as_the_masked_dense_path(skipping, channels, image, threshold):
    for model in (skipping, channels):
        with torch.inference_mode():  # as the app runs every model
            trace = model.analyze(image, {"threshold": threshold})
            dense = model.net(model.network_input(image).tensor, threshold).logits[0].softmax(-1)
        top = trace.prediction.top
        assert [c.index for c in top] == dense.topk(len(top)).indices.tolist()
        assert [c.probability for c in top] == pytest.approx(dense.topk(len(top)).values.tolist(), abs=1e-5)


def test_gated_traces_round_trip_through_json(skipping, channels, image):
    for model in (skipping, channels):
        trace = model.analyze(image, {"threshold": 0.5})
        assert Trace.from_json(trace.to_json()) == trace
    summary = skipping.analyze(image, {"threshold": 0.5}).summary()
    assert (
        len(summary["block_mask"]) == summary["blocks"]
        and summary["block_mask"].count("1") == summary["blocks_executed"]
    )


def test_the_card_gets_each_class_s_execution_rates_and_its_baselines_on_the_same_inputs(skipping, tmp_path):
    files = labelled_patterns(tmp_path, (0, 0, 3))
    points, baselines, usage = evaluate(skipping, files, skipping.operating_points(), "θ = 0.5", {"twin": skipping})
    assert len(points) == len(baselines) == len(skipping.operating_points())
    for point, baseline in zip(points, baselines):  # a baseline taking turns on each input gets its own figures
        assert baseline.name == f"twin, {point.name}"
        assert (baseline.top1, baseline.top5, baseline.mean_flops) == (point.top1, point.top5, point.mean_flops)
    assert usage.classes == (skipping.labels[0], skipping.labels[3]) and usage.images == (2, 1)
    assert len(usage.units) == len(skipping.parts)
    assert all(0.0 <= rate <= 1.0 for row in usage.rates for rate in row)
    ungated = [i for i, part in enumerate(skipping.parts) if str(i) not in skipping.net.gates]
    assert all(row[i] == 1.0 for row in usage.rates for i in ungated)
    # Where each gate's probability lies over the images, for a visitor to tell deciding gates from coin flips.
    probabilities = [
        {b.name: b.probability for b in skipping.analyze(f.load(), {"threshold": 0.5}).records_of(BlockRecord)}
        for f in files
    ]
    assert len(usage.gate_spread) == len(usage.units)
    for unit, spread in zip(usage.units, usage.gate_spread):
        seen = [p[unit] for p in probabilities]
        if seen[0] is None:
            assert spread is None
        else:
            assert spread == pytest.approx(np.percentile(seen, (10, 50, 90)), abs=1e-4)


@pytest.mark.parametrize("kind", [ChannelRecord, MaskRecord])
def test_the_card_gets_the_share_of_each_unit_s_gates_that_decide_by_input(kind, channels, tmp_path):
    """A layer's channel gates, a block's positions: how many decide differently for different images."""
    model = channels if kind is ChannelRecord else tiny_dynconv(ResNetCifar(14))
    files = labelled_patterns(tmp_path, [i % 3 for i in range(10)])
    _, _, usage = evaluate(model, files, model.operating_points(), "θ = 0.5")
    decisions = [kind.decisions(model.analyze(f.load(), {"threshold": 0.5}).records_of(kind)) for f in files]
    for unit, varying in zip(usage.units, usage.varying_gates):
        on = np.mean([d[unit] for d in decisions], axis=0)
        assert varying == pytest.approx(np.mean((on >= 0.1) & (on <= 0.9)), abs=1e-4)
    assert 0 < max(usage.varying_gates)  # the varied gates of these tiny networks do differ between the images
    assert usage.gate_spread is None  # a layer of channels, a block of positions: no single gate to follow


def test_training_decisions_are_hard_and_the_rate_loss_pulls_towards_the_target():
    bias = torch.full((8,), 3.0, requires_grad=True)  # a gate's bias, shared by the batch
    optimizer = torch.optim.SGD([bias], lr=20.0)
    for _ in range(100):
        gates = sample_decisions(bias.expand(256, 8))
        assert torch.minimum(gates, 1 - gates).abs().max() < 1e-6  # 0 or 1, up to the straight-through's rounding
        optimizer.zero_grad()
        execution_rate_loss([gates], 0.3).backward()
        optimizer.step()
    assert sample_decisions(bias.detach().expand(4096, 8)).mean().item() == pytest.approx(0.3, abs=0.1)


@pytest.mark.parametrize("network", [SkipNetwork, ChannelGatedNetwork])
def test_without_noise_training_decides_as_inference_does_and_the_gates_still_learn(network):
    # The untrained backbone's weights set how large the gates' logits are. Drawn from whatever random state the
    # tests before had left, about a quarter of them (55 of 200 states) saturated some skip gate's sigmoid in float32
    # (p exactly 1), which then passes no gradient: the test failed or passed by the order the tests ran in.
    torch.manual_seed(1)
    net = varied_gates(network(ResNetCifar(14), noise=False), 3).train()
    for norm in net.modules():  # batch statistics would change what the gates read
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.eval()
    x = torch.randn(6, 3, 32, 32)
    trained = net(x)
    with torch.no_grad():
        inferred = net.eval()(x)
    decided = [g.detach().round().flatten().tolist() for g in trained.gates]  # round: the straight-through's residue
    assert decided == [g.flatten().tolist() for g in inferred.gates]
    execution_rate_loss(trained.gates, 0.0).backward()
    assert all(gate.fc2.bias.grad.abs().sum() > 0 for gate in net.gates.values())


@pytest.mark.parametrize("network", [SkipNetwork, ChannelGatedNetwork, DynConvNetwork])
@pytest.mark.parametrize("units_shape_features", [True, False])
def test_the_rate_penalty_reshapes_the_backbone_only_where_the_units_may_shape_its_features(
    network, units_shape_features
):
    """Recipes that adapt a pretrained backbone cut the units' gradient from it (dynviz.train.distill)."""
    net = network(ResNetCifar(14))
    if hasattr(net, "gates"):
        varied_gates(net, 4)
    net.units_shape_features = units_shape_features
    execution_rate_loss(net.train()(torch.randn(4, 3, 32, 32)).gates, 0.0).backward()
    units = net.gates if hasattr(net, "gates") else net.masks
    assert any(p.grad.abs().sum() > 0 for p in units.parameters())
    stem_moves = any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.backbone.stem.parameters())
    assert stem_moves == units_shape_features


def test_a_gate_asked_for_one_input_answers_as_for_a_batch(skipping, channels, image):
    for model in (skipping, channels):
        with torch.inference_mode():
            x = model.net.backbone.stem(model.network_input(image).tensor)
            for i, block in enumerate(model.net.backbone.blocks):
                if str(i) in model.net.gates:
                    gate = model.net.gates[str(i)]
                    assert gate.logits_of_one(x).tolist() == pytest.approx(gate(x)[0].tolist(), abs=1e-5)
                x = block(x)


def test_static_twin_and_gated_models_are_served_in_one_memory_layout(skipping, channels):
    twin = StaticResNetCifar(14, ResNetCifar(14))
    for model in (twin, skipping, channels):
        convolutions = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
        assert convolutions and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions)


def test_an_mbconv_channel_that_never_leaves_its_mean_is_not_salient_and_costs_nothing_to_switch_off():
    block = tiny_lite().blocks[2]  # 72 expanded channels
    x = torch.randn(4, 12, 8, 8)
    with torch.no_grad():
        block.expand[0].weight[5] = 0.0  # channel 5 is the same constant for every input and position
        h = expanded_features(block, x)
        fill = h.mean((0, 2, 3))
        contribution = contributions(block, x, fill)
        assert contribution[:, 5].abs().max() < 1e-6 and salient(contribution)[:, 5].sum() == 0
        on = torch.ones(4, 72)
        off = on.clone()
        off[:, 5] = 0.0
        assert torch.allclose(masked_block(block, x, off, fill), masked_block(block, x, on, fill), atol=1e-5)
        off[:, 6] = 0.0  # a channel that varies: holding its mean changes the block's output
        assert not torch.allclose(masked_block(block, x, off, fill), masked_block(block, x, on, fill), atol=1e-5)


def test_the_block_chart_draws_each_gate_s_spread_from_the_card_beside_this_input_s_probability(skipping, image):
    from dynviz.cards import ClassUsage
    from dynviz.viz.gates import block_grid

    trace = skipping.analyze(image, {"threshold": 0.5})
    blocks = trace.records_of(BlockRecord)
    assert len(block_grid(trace).data) == 3  # gates, FLOPs spent, FLOPs saved: no card, no spread
    spread = tuple(None if b.probability is None else (0.1, 0.3 + 0.01 * b.index, 0.9) for b in blocks)
    usage = ClassUsage("θ = 0.5", tuple(b.name for b in blocks), ("c0",), (1,), ((1.0,) * len(blocks),), spread)
    whiskers = next(t for t in block_grid(trace, usage, "the 3 test images").data if t.type == "scatter")
    gated = [b for b in blocks if b.probability is not None]
    assert list(whiskers.x) == [b.name for b in gated]
    assert list(whiskers.y) == pytest.approx([0.3 + 0.01 * b.index for b in gated])
    assert list(whiskers.y + whiskers.error_y.array) == pytest.approx([0.9] * len(gated))
    assert list(whiskers.y - whiskers.error_y.arrayminus) == pytest.approx([0.1] * len(gated))
    assert "on the 3 test images" in whiskers.hovertext[0]


def test_the_layer_chart_marks_the_share_of_each_layer_s_gates_that_decide_by_input_from_the_card(channels, image):
    from dynviz.cards import ClassUsage
    from dynviz.viz.gates import active_fraction_chart

    trace = channels.analyze(image, {"threshold": 0.5})
    layers = [r.name for r in trace.records_of(ChannelRecord)]
    assert len(active_fraction_chart(trace).data) == 2  # no card: this input's shares only
    varying = tuple(0.1 * i for i in range(len(layers)))
    usage = ClassUsage("θ = 0.5", tuple(layers), ("c0",), (1,), ((1.0,) * len(layers),), None, varying)
    circles = active_fraction_chart(trace, usage, "the 3 test images").data[-1]
    assert list(circles.x) == layers and list(circles.y) == pytest.approx(varying)
    assert "of the 3 test images" in circles.hovertext[0]


def test_the_per_class_chart_names_ten_classes_in_order_and_sorts_hundreds_by_their_path_s_cost():
    from dynviz.cards import ClassUsage
    from dynviz.viz.gates import MAX_NAMED_CLASSES, class_usage_heatmap

    def usage(classes: int) -> ClassUsage:
        rates = tuple((1.0, (c * 7 % classes) / classes) for c in range(classes))
        return ClassUsage(
            "default", ("block 1", "block 2"), tuple(f"c{c}" for c in range(classes)), (1,) * classes, rates
        )

    few = class_usage_heatmap(usage(10), "block")
    assert list(few.data[0].y) == [f"c{c} (1)" for c in range(10)] and few.layout.yaxis.showticklabels is not False
    many = class_usage_heatmap(usage(MAX_NAMED_CLASSES + 60), "block")
    shares = [row[1] for row in many.data[0].z]
    assert shares == sorted(shares) and many.layout.yaxis.showticklabels is False
    assert sorted(many.data[0].y) == sorted(f"c{c} (1)" for c in range(MAX_NAMED_CLASSES + 60))  # hover names them
