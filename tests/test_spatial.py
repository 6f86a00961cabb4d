"""Spatial decisions on tiny, untrained networks: DynConv's sparse path equals its masked dense path and
computes nothing where the mask is off; glance and focus crops are in input-image coordinates and follow
the knobs; RANet answers from the resolution its exits allow."""

import pytest
import torch
from conftest import encode, pattern, tiny_lite

from dynviz.cost import count_macs
from dynviz.fused import inference_path
from dynviz.inputs import load_image
from dynviz.models.dynconv import (
    DynConvNetwork,
    DynConvResNetCifar,
    branch,
    dilate,
    dilation_radii,
)
from dynviz.models.efficientnet_lite import center_crop_box
from dynviz.models.gfnet import (
    PATCH_FRACTION,
    ClassActivationPolicy,
    GlanceAndFocus,
    LearnedPolicy,
    covered_cells,
)
from dynviz.models.resnet_cifar import ResNetCifar
from dynviz.trace import ExitRecord, FocusRecord, MaskRecord, Trace
from dynviz.train.gfnet import GlanceThenFocus
from dynviz.zoo import ready_to_serve

THRESHOLDS = (0.05, 0.3, 0.5, 0.7, 0.95)


def varied(net: DynConvNetwork, seed: int) -> DynConvNetwork:
    """Untrained mask units and norms are nearly uniform: give them weights so masks and values vary."""
    torch.manual_seed(seed)
    for unit in net.masks.values():
        torch.nn.init.normal_(unit.conv.weight, std=2.0)
        torch.nn.init.normal_(unit.conv.bias, std=1.0)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
            module.bias.data.normal_()
    return net


@pytest.fixture(scope="module", params=["resnet", "mbconv"])
def masking(request):
    torch.manual_seed(0)  # the same tiny network on every run: the tests compare its decisions across θ
    backbone = tiny_lite() if request.param == "mbconv" else ResNetCifar(14)
    return ready_to_serve(DynConvResNetCifar(varied(DynConvNetwork(backbone), 1)))  # CIFAR input, tiny backbone


@pytest.fixture(scope="module")
def image():
    return load_image(encode(pattern(40, 32, seed=5), "PNG"), "tiny.png")


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_masked_positions_are_not_computed(masking, image, threshold):
    """FlopCounterMode on the executed path counts exactly the positions each (dilated) mask lets through."""
    settings = {"threshold": threshold}
    with torch.inference_mode():
        counted = count_macs(lambda: masking.analyze(image, settings))
    trace = masking.analyze(image, settings)
    masks = trace.records_of(MaskRecord)
    assert trace.cost.flops == counted == masking.fixed_flops + sum(m.flops for m in masks)
    for built, record in zip(masking.masked, masks):
        mask = torch.tensor(record.computed, dtype=torch.float).view(1, 1, record.resolution, record.resolution)
        radii = dilation_radii(branch(masking.net.backbone.blocks[built.block]))
        positions = [int(dilate(mask, r).sum()) for r in radii]
        assert record.flops == sum(c * n for c, n in zip(built.position_flops, positions))
        if not any(record.computed):
            assert record.flops == 0


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_the_sparse_path_equals_the_masked_dense_path(masking, image, threshold):
    seen = masking.network_input(image)
    with torch.inference_mode():
        sparse, _, _ = masking.executed(seen.tensor, threshold, inference_path(masking.net.backbone, seen.tensor.shape))
        dense = masking.net(seen.tensor, threshold).logits[0]
    torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-4)


def test_raising_the_threshold_computes_fewer_positions(masking, image):
    """The first mask reads the same input at every θ, so it shrinks as θ rises; later masks read features
    that θ has changed, so only the whole is compared, from end to end."""
    traces = [masking.analyze(image, {"threshold": t}) for t in THRESHOLDS]
    first = [t.records_of(MaskRecord)[0] for t in traces]
    assert len({r.probabilities for r in first}) == 1
    for record, threshold in zip(first, THRESHOLDS):
        decided = [(c, p) for c, p in zip(record.computed, record.probabilities) if abs(p - threshold) > 5e-4]
        assert all(computed == (p >= threshold) for computed, p in decided)  # traces round p to 3 decimals
    assert traces[0].summary()["mask_density"] > traces[-1].summary()["mask_density"]
    assert traces[0].cost.flops > traces[-1].cost.flops


def test_mask_traces_round_trip_and_sit_on_the_input(masking, image):
    trace = masking.analyze(image)
    assert Trace.from_json(trace.to_json()) == trace
    for record in trace.records_of(MaskRecord):
        assert len(record.computed) == len(record.probabilities) == record.resolution**2
        assert record.box == masking.network_input(image).box  # the grid covers what the network saw


def test_the_sparsity_criterion_is_each_block_s_share_of_its_flops(masking, image):
    """In training the masks are hard (as at inference) and the loss sees the FLOPs share they spend."""
    masking.net.train().requires_grad_(True)  # as in training: the model is served frozen
    for module in masking.net.modules():  # batch statistics of one image would change the features
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    try:
        output = masking.net(masking.network_input(image).tensor)
    finally:
        ready_to_serve(masking.net)
    trace = masking.analyze(image, {"threshold": 0.5})
    shares = [float(s.detach()) for s in output.gates]
    expected = [m.flops / m.flops_full for m in trace.records_of(MaskRecord)]
    assert shares == pytest.approx(expected, abs=1e-6)
    assert all(s.requires_grad for s in output.gates)


@pytest.fixture(scope="module")
def focusing():
    torch.manual_seed(0)
    net = tiny_lite(classes=1000)
    learned = LearnedPolicy(net.classifier.in_features)
    torch.nn.init.normal_(learned.score.weight, std=1.0)
    return ready_to_serve(GlanceAndFocus(learned, net))


@pytest.fixture(scope="module")
def wide_photo():
    return load_image(encode(pattern(300, 200, seed=7), "PNG"), "wide.png")


@pytest.mark.parametrize("policy", [0, 1])
def test_crop_boxes_are_in_input_image_coordinates(focusing, wide_photo, policy):
    trace = focusing.analyze(wide_photo, {"threshold": 1.0, "focus_steps": 3, "policy": policy})
    view = center_crop_box(*wide_photo.size)
    focus = trace.records_of(FocusRecord)
    steps = trace.records_of(ExitRecord)
    assert len(focus) == 3 and all(s.computed for s in steps)
    assert steps[0].view_box == view
    for record, step in zip(focus, steps[1:]):
        x0, y0, x1, y1 = record.box
        assert view[0] - 1e-6 <= x0 < x1 <= view[2] + 1e-6 and view[1] - 1e-6 <= y0 < y1 <= view[3] + 1e-6
        assert x1 - x0 == pytest.approx(PATCH_FRACTION * (view[2] - view[0]))
        assert step.view_box == record.box
        assert record.grid_box == view
    assert Trace.from_json(trace.to_json()) == trace


def test_knobs_decide_how_many_steps_run(focusing, wide_photo):
    memo = {}
    never = focusing.analyze(wide_photo, {"threshold": 1.0, "focus_steps": 2}, memo)
    at_once = focusing.analyze(wide_photo, {"threshold": 0.0, "focus_steps": 2}, memo)
    glance_only = focusing.analyze(wide_photo, {"threshold": 1.0, "focus_steps": 0}, memo)
    assert never.answered_at.index == 2 and len(never.records_of(FocusRecord)) == 2
    assert at_once.answered_at.index == 0 and not at_once.records_of(FocusRecord)
    assert glance_only.answered_at.index == 0
    assert at_once.cost.flops == glance_only.cost.flops == focusing.glance_flops < never.cost.flops
    assert never.summary()["focus_steps"] == 2 and never.summary()["crop_boxes"].count("|") == 1


@pytest.mark.parametrize("policy", [0, 1])
def test_each_step_costs_what_flop_counter_mode_counts(focusing, wide_photo, policy):
    settings = {"threshold": 1.0, "focus_steps": 2, "policy": policy}
    with torch.inference_mode():
        counted = count_macs(lambda: focusing.analyze(wide_photo, settings))
    assert focusing.analyze(wide_photo, settings).cost.flops == counted


def test_the_class_activation_policy_looks_at_the_peak_and_then_elsewhere():
    classifier = torch.nn.Linear(4, 3)
    torch.nn.init.eye_(classifier.weight)
    features = torch.zeros(1, 4, 5, 5)
    features[0, 2, 4, 0] = 10.0  # class 2 lights up the bottom-left cell
    policy = ClassActivationPolicy(classifier)
    scores = policy.scores(features, 2)
    u, v = policy.centre(scores, torch.zeros(5, 5, dtype=torch.bool))
    assert u < 0.4 and v > 0.6
    view = (0.0, 0.0, 100.0, 100.0)
    covered = covered_cells(5, [(0.0, 43.0, 57.0, 100.0)], view)
    assert covered[4, 0] and not covered[0, 4]


def test_the_learned_policy_is_trained_through_the_crop():
    torch.manual_seed(0)
    trainer = GlanceThenFocus(LearnedPolicy(32))
    trainer.net = tiny_lite(classes=1000)
    trainer.policy.score.weight.data.normal_()
    trainer.requires_grad_(False).policy.requires_grad_(True)
    log_probabilities = trainer(torch.randn(2, 3, 224, 224))
    torch.nn.functional.nll_loss(log_probabilities, torch.tensor([1, 2])).backward()
    assert trainer.policy.score.weight.grad.abs().sum() > 0
