"""Spatial decisions on tiny, untrained networks: DynConv's sparse path equals its masked dense path and
computes nothing where the mask is off; glance and focus patches are distinct candidates in input-image
coordinates, as many as the thresholds allow; RANet answers from the resolution its exits allow."""

import pytest
import torch
from conftest import encode, pattern, tiny_dynconv, tiny_lite

from dynviz.cost import count_macs
from dynviz.fused import inference_path
from dynviz.inputs import load_image
from dynviz.models.dynconv import (
    branch,
    dilate,
    dilation_radii,
)
from dynviz.models.efficientnet_lite import center_crop_box
from dynviz.models.gfnet import (
    CANDIDATES_PER_SIDE,
    NATIVE,
    PATCH_FRACTION,
    ClassActivationPolicy,
    FusedClassifiers,
    GlanceAndFocus,
    GlanceFocusPoint,
    RecurrentPolicy,
    candidate_centres,
    candidate_corners,
    candidate_grid_box,
    patch_box,
)
from dynviz.models.resnet_cifar import ResNetCifar
from dynviz.trace import ExitRecord, FocusRecord, MaskRecord, Trace
from dynviz.train.gfnet import Features, FocusSteps, cached, train_steps
from dynviz.zoo import ready_to_serve

THRESHOLDS = (0.05, 0.3, 0.5, 0.7, 0.95)


@pytest.fixture(scope="module", params=["resnet", "mbconv"])
def masking(request):
    torch.manual_seed(0)  # the same tiny network on every run: the tests compare its decisions across θ
    return tiny_dynconv(tiny_lite() if request.param == "mbconv" else ResNetCifar(14))


@pytest.fixture(scope="module")
def image():
    return load_image(encode(pattern(40, 32, seed=5), "PNG"), "tiny.png")


def test_the_density_chart_marks_the_share_of_each_block_s_positions_that_decide_by_input_from_the_card(masking, image):
    from dynviz.cards import ClassUsage
    from dynviz.viz.spatial import mask_density_chart

    trace = masking.analyze(image, {"threshold": 0.5})
    blocks = [r.name for r in trace.records_of(MaskRecord)]
    assert len(mask_density_chart(trace).data) == 2  # no card: FLOPs spent and saved only
    varying = tuple(0.05 * i for i in range(len(blocks)))
    usage = ClassUsage("θ = 0.5", tuple(blocks), ("c0",), (1,), ((1.0,) * len(blocks),), None, varying)
    circles = mask_density_chart(trace, usage, "the 3 test images").data[-1]
    assert circles.yaxis == "y2" and list(circles.y) == pytest.approx(varying)
    assert "of the 3 test images" in circles.hovertext[0]


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
    assert len(traces[0].gate_probabilities()) == sum(len(r.computed) for r in traces[0].records_of(MaskRecord))


def test_mask_traces_round_trip_and_sit_on_the_input(masking, image):
    trace = masking.analyze(image)
    assert Trace.from_json(trace.to_json()) == trace
    for record in trace.records_of(MaskRecord):
        assert len(record.computed) == len(record.probabilities) == record.resolution**2
        assert record.box == masking.network_input(image).box  # the grid covers what the network saw


def test_the_sparsity_criterion_is_each_block_s_share_of_its_flops(masking, image):
    """In training the masks are hard (without Gumbel noise, those of inference) and the loss sees the FLOPs share
    they spend."""
    masking.net.train().requires_grad_(True)  # as in training: the model is served frozen
    masking.net.noise = False
    for module in masking.net.modules():  # batch statistics of one image would change the features
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    try:
        output = masking.net(masking.network_input(image).tensor)
    finally:
        masking.net.noise = True
        ready_to_serve(masking.net)
    trace = masking.analyze(image, {"threshold": 0.5})
    shares = [float(s.detach()) for s in output.gates]
    expected = [m.flops / m.flops_full for m in trace.records_of(MaskRecord)]
    assert shares == pytest.approx(expected, abs=1e-6)
    assert all(s.requires_grad for s in output.gates)


def test_with_gumbel_noise_the_training_masks_are_sampled_and_inference_stays_decided(masking, image):
    x = masking.network_input(image).tensor
    masking.net.train()
    for module in masking.net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    try:
        with torch.no_grad():
            torch.manual_seed(0)
            first, second = (masking.net(x).gates for _ in range(2))
    finally:
        ready_to_serve(masking.net)
    assert any(not torch.equal(a, b) for a, b in zip(first, second))
    decided = [masking.analyze(image, {"threshold": 0.5}).records_of(MaskRecord) for _ in range(2)]
    assert decided[0] == decided[1]


CANDIDATES = CANDIDATES_PER_SIDE**2
NEVER_STOP = {"tau_1": 1.0, "tau_2": 1.0}


@pytest.fixture(scope="module")
def focusing():
    torch.manual_seed(0)
    net = tiny_lite(classes=1000)
    learned = RecurrentPolicy(channels=32)
    torch.nn.init.normal_(learned.score.weight, std=1.0)
    fused = FusedClassifiers.averaging(net.classifier, net.classifier)
    points = {"learned, τ = 0.5": GlanceFocusPoint(1, (0.5, 0.5))}
    model = GlanceAndFocus(net, fused, learned, torch.ones(2, 3), points, "learned, τ = 0.5")
    return ready_to_serve(model.requires_grad_(False))


@pytest.fixture(scope="module")
def wide_photo():
    return load_image(encode(pattern(300, 200, seed=7), "PNG"), "wide.png")


@pytest.mark.parametrize("policy", [0, 1])
def test_patches_are_distinct_candidates_in_input_image_coordinates(focusing, wide_photo, policy):
    trace = focusing.analyze(wide_photo, NEVER_STOP | {"policy": policy})
    view = center_crop_box(*wide_photo.size)
    focus = trace.records_of(FocusRecord)
    steps = trace.records_of(ExitRecord)
    assert len(focus) == 2 and all(s.computed for s in steps)
    assert steps[0].view_box == view
    candidates = [patch_box(c, view) for c in candidate_centres()]
    for record, step in zip(focus, steps[1:]):
        assert record.box in candidates and step.view_box == record.box
        assert record.box[2] - record.box[0] == pytest.approx(PATCH_FRACTION * (view[2] - view[0]))
        assert record.grid == CANDIDATES_PER_SIDE and len(record.scores) == CANDIDATES
        assert record.grid_box == candidate_grid_box(view)
    assert focus[0].box != focus[1].box  # never the same patch twice
    assert Trace.from_json(trace.to_json()) == trace


def test_a_threshold_per_step_decides_how_many_steps_run(focusing, wide_photo):
    memo = {}
    every_step = focusing.analyze(wide_photo, NEVER_STOP, memo)
    glance_only = focusing.analyze(wide_photo, {"tau_1": 0.0, "tau_2": 1.0}, memo)
    one_focus = focusing.analyze(wide_photo, {"tau_1": 1.0, "tau_2": 0.0}, memo)
    assert [t.answered_at.index for t in (glance_only, one_focus, every_step)] == [0, 1, 2]
    assert [len(t.records_of(FocusRecord)) for t in (glance_only, one_focus, every_step)] == [0, 1, 2]
    assert glance_only.cost.flops == focusing.glance_flops < one_focus.cost.flops < every_step.cost.flops
    assert every_step.summary()["focus_steps"] == 2 and every_step.summary()["crop_boxes"].count("|") == 1


@pytest.mark.parametrize("policy", [0, 1])
def test_each_step_costs_what_flop_counter_mode_counts(focusing, wide_photo, policy):
    settings = NEVER_STOP | {"policy": policy}
    with torch.inference_mode():
        counted = count_macs(lambda: focusing.analyze(wide_photo, settings))
    assert focusing.analyze(wide_photo, settings).cost.flops == counted


def test_the_class_activation_policy_picks_the_candidate_over_the_peak():
    classifier = torch.nn.Linear(4, 3)
    torch.nn.init.eye_(classifier.weight)
    features = torch.zeros(1, 4, 4, 4)
    features[0, 2, 3, 0] = 10.0  # class 2 lights up the bottom-left cell
    policy = ClassActivationPolicy(classifier)
    scores = policy.candidate_scores(features, 2)
    assert int(scores.argmax()) == CANDIDATES - CANDIDATES_PER_SIDE  # the bottom row's first candidate
    u, v = policy.centre(policy.scores(features, 2))
    assert u < 0.4 and v > 0.6


def test_the_fused_classifiers_start_as_the_average_of_both_networks_logits():
    glance, focus = torch.nn.Linear(6, 5), torch.nn.Linear(6, 5)
    fused = FusedClassifiers.averaging(glance, focus, steps=2)
    g, f1, f2 = torch.randn(3, 2, 6)
    assert torch.allclose(fused([g, f1]), (glance(g) + focus(f1)) / 2, atol=1e-6)
    assert torch.allclose(fused([g, f1, f2]), (glance(g) + focus(f1) + focus(f2)) / 3, atol=1e-6)


def test_the_steps_follow_a_given_order_and_the_policy_never_looks_twice():
    torch.manual_seed(0)
    steps = FocusSteps(FusedClassifiers(2, 32, 10), RecurrentPolicy(channels=32))
    features = Features(torch.randn(8, 32, 4, 4), torch.randn(8, CANDIDATES, 32), torch.randn(8, 10))
    order = torch.rand(8, CANDIDATES).argsort(-1)
    glance, rows = features.glance_map.mean((2, 3)), torch.arange(8)
    first, second = (features.patches[rows, order[:, t]] for t in range(2))
    assert torch.allclose(steps(features, order)[-1], steps.fused([glance, first, second]))
    looked_before = []
    steps.walk(features, policy_loss=lambda scores, seen, looked: looked_before.append(looked.sum(1)) or 0.0)
    assert [counts.tolist() for counts in looked_before] == [[0] * 8, [1] * 8]


def test_the_policy_learns_to_look_where_the_fused_prediction_comes_closest_to_the_teacher(monkeypatch):
    monkeypatch.setattr("dynviz.train.gfnet.HEAD_EPOCHS", 30)
    torch.manual_seed(0)
    fused = FusedClassifiers(2, 16, 6)
    features = Features(torch.randn(96, 16, 4, 4), torch.randn(96, CANDIDATES, 16), torch.zeros(96, 6))
    best = 5
    with torch.no_grad():  # the teacher says what the glance and candidate 5 say together
        teacher = 4 * fused([features.glance_map.mean((2, 3)), features.patches[:, best]])
    features = Features(features.glance_map, features.patches, teacher)
    steps = FocusSteps(fused, RecurrentPolicy(channels=16))
    train_steps(steps, features, features, teacher.argmax(-1))
    state = steps.policy.start(features.glance_map)
    assert (steps.policy(state).argmax(-1) == best).float().mean() > 0.8


def test_the_training_patches_are_the_served_candidates():
    view = (0.0, 0.0, 224.0, 224.0)
    corners = sorted({(round(x0), round(y0)) for x0, y0, *_ in (patch_box(c, view) for c in candidate_centres())})
    offsets = candidate_corners(NATIVE)  # where the recipe cuts the patches of a 224 px view
    assert corners == sorted((x, y) for x in offsets for y in offsets)


def test_cached_features_are_read_back_on_resume_with_the_time_they_took(tmp_path, monkeypatch):
    monkeypatch.setattr("dynviz.train.gfnet.CHECKPOINTS", tmp_path)
    monkeypatch.setattr("dynviz.train.gfnet.CHUNK", 2)
    squares = torch.arange(5 * 3 * 4 * 4, dtype=torch.uint8).view(5, 3, 4, 4)
    calls = []

    def compute(chunk: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(len(chunk))
        return {"sums": chunk.float().sum((1, 2, 3))}

    first, earlier = cached("test", squares, compute, resume=True)
    assert calls == [2, 2, 1] and earlier == 0.0
    again, earlier = cached("test", squares, compute, resume=True)
    assert calls == [2, 2, 1] and torch.equal(again["sums"], first["sums"]) and earlier > 0.0
    cached("test", squares, compute, resume=False)
    assert calls == [2, 2, 1, 2, 2, 1]
