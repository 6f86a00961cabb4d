"""Dynamic parameters: deformable convolution and attention, CondConv, mixture of experts (tiny untrained
networks, generated inputs)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import encode, pattern, tiny
from PIL import ImageColor

from dynviz.cost import BILINEAR_MACS, count_macs
from dynviz.inputs import load_image
from dynviz.models.base import collecting
from dynviz.models.dat import DeformableAttention, reference_points
from dynviz.models.dcn import DeformableConv2d, deform_conv2d, make_deformable
from dynviz.models.moe import SwitchMlp, upcycle
from dynviz.models.resnet_cifar import ResNetCifar
from dynviz.models.vit import TINY as TINY_VIT
from dynviz.models.vit import Attention, VisionTransformer
from dynviz.runtime import inference
from dynviz.trace import (
    DeformableAttentionRecord,
    ExpertRecord,
    RoutingRecord,
    SamplingRecord,
)
from dynviz.viz.parameters import (
    CHOSEN,
    cell_centre,
    effective_points,
    magnified,
    offset_picture,
    stacked_picture,
)


@pytest.fixture(scope="module")
def wide():
    """96×72: a CIFAR network sees its central 72×72 square, 9 input pixels per cell of an 8×8 map."""
    return load_image(encode(pattern(96, 72, seed=5), "PNG"), "wide.png")


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_offsets_with_unit_modulation_are_the_ordinary_convolution(stride):
    torch.manual_seed(0)
    x, weight = torch.randn(2, 5, 7, 9), torch.randn(4, 5, 3, 3)
    expected = F.conv2d(x, weight, stride=stride, padding=1)
    rows, columns = expected.shape[-2:]
    y = deform_conv2d(x, torch.zeros(2, 18, rows, columns), torch.ones(2, 9, rows, columns), weight, stride)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_a_trained_network_made_deformable_starts_as_that_network():
    """DCN's recipe adds deformable layers to the trained twin: before fine-tuning they compute what the
    convolutions they replace computed (zero offsets, modulation ½ against a doubled kernel)."""
    torch.manual_seed(0)
    twin = ResNetCifar(14).eval()
    for module in twin.modules():  # running statistics and scales a trained network would have
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(3, 3, 32, 32)
    expected = twin(x)
    deformable = make_deformable(twin, deformable_blocks=1).eval()
    assert sum(isinstance(m, DeformableConv2d) for m in deformable.modules()) == 2
    torch.testing.assert_close(deformable(x), expected, rtol=1e-4, atol=1e-4)


def test_an_upcycled_mixture_starts_as_its_dense_transformer_with_the_tokens_spread_over_the_experts():
    """Sparse Upcycling: every expert a copy of the dense MLP (its output scaled by E against gates of about
    1/E), the router near zero, so the mixture answers as the dense network and routes tokens at random."""
    torch.manual_seed(0)
    dense = VisionTransformer(**TINY_VIT).eval()
    x = torch.randn(4, 3, 32, 32)
    mixture = upcycle(dense, experts=4).eval()
    torch.testing.assert_close(mixture(x), dense(x), rtol=0.05, atol=0.05)
    with collecting() as decisions:
        mixture(x)
    routings = [routing for module, routing in decisions if isinstance(module, SwitchMlp)]
    assert routings and all((r.probabilities - 0.25).abs().max() < 0.01 for r in routings)
    assert all(len(r.choices.unique()) == 4 for r in routings)


def test_a_whole_pixel_offset_reads_the_neighbouring_pixel():
    x, weight = torch.randn(1, 3, 6, 6), torch.randn(2, 3, 3, 3)
    offsets = torch.zeros(1, 18, 6, 6)
    offsets[:, 1::2] = 1.0  # every tap one pixel to the right: the convolution of x shifted left by one
    y = deform_conv2d(x, offsets, torch.ones(1, 9, 6, 6), weight)
    shifted = F.conv2d(F.pad(x[..., 1:], (0, 1)), weight, padding=1)
    # Column 0 differs: its leftmost taps now read x's first column, where the shifted image has padding.
    torch.testing.assert_close(y[..., 1:], shifted[..., 1:], rtol=1e-5, atol=1e-5)


def test_a_deformable_layer_costs_its_offsets_its_kernel_and_four_multiply_adds_per_sample():
    layer = DeformableConv2d(6, 8).eval()
    x = torch.randn(1, 6, 5, 5)
    positions, taps = 25, 9
    predictor = 6 * 3 * taps * taps * positions  # 3×3 convolution to 2K offsets and K modulations
    kernel = 8 * 6 * taps * positions
    sampling = BILINEAR_MACS * 6 * taps * positions
    assert count_macs(lambda: layer(x)) == predictor + kernel + sampling


def shifted_samples(image, down: float, right: float) -> list[SamplingRecord]:
    """A tiny DCN whose first deformable layer moves every sample by (``down``, ``right``) cells, on ``image``."""
    model = tiny("dcn_resnet_cifar")
    layer = next(m for m in model.net.modules() if isinstance(m, DeformableConv2d))
    with torch.no_grad():
        layer.offset.weight.zero_()
        layer.offset.bias.zero_()
        layer.offset.bias[0:18:2] = down
        layer.offset.bias[1:18:2] = right
    with inference():
        return model.analyze(image).records_of(SamplingRecord)


def test_sampling_points_lie_where_the_offsets_say_in_input_pixels(wide):
    record = shifted_samples(wide, down=0.5, right=-1.0)[0]
    assert record.resolution == 8 and record.box == (12.0, 0.0, 84.0, 72.0)
    cell = 9.0
    for position in (0, 27, 63):
        row, column = divmod(position, 8)
        for tap, (x, y) in enumerate(record.position_points(position)):
            dy, dx = divmod(tap, 3)
            assert x == pytest.approx(12 + (column + dx - 1 - 1.0 + 0.5) * cell, abs=0.01)
            assert y == pytest.approx((row + dy - 1 + 0.5 + 0.5) * cell, abs=0.01)
    assert record.mean_offset == pytest.approx(cell * (1.0**2 + 0.5**2) ** 0.5, abs=0.01)
    assert set(record.modulation) == {0.5}  # σ(0)


def test_the_pictures_draw_each_position_s_mean_offset_and_the_chosen_position(wide):
    records = shifted_samples(wide, down=0.0, right=-1.0)  # every sample one cell (9 input pixels) left
    field, caption = offset_picture(wide.image, records[0])
    assert caption.endswith("Mean offset 9.0 px")
    scale = field.width / wide.image.width  # a small input is drawn enlarged
    x, y = cell_centre(records[0].box, 8, 31)  # the last of its row
    red = ImageColor.getrgb("#ff4b4b")
    assert field.getpixel((round((x - 4.5) * scale), round(y * scale))) == red  # on the arrow, half a cell left
    assert field.getpixel((round((x + 3) * scale), round(y * scale))) != red  # nothing to the right
    crosses = []
    for position in (0, 7):  # the first row's two ends
        picture, caption = stacked_picture(wide.image, records, position)
        assert caption == "Effective sampling locations through 2 stacked layers: 81 points"
        x, y = cell_centre(records[-1].box, 8, position)
        assert picture.getpixel((round(x * scale), round(y * scale))) == ImageColor.getrgb(CHOSEN)
        crosses.append(np.asarray(picture))
    assert not np.array_equal(*crosses)


def test_short_offsets_are_drawn_magnified_and_the_caption_says_so():
    assert magnified(8.1, 42.6) == 5  # the longest arrow a fifth of a cell: drawn 5× as long
    assert magnified(9.0, 9.0) == 1 and magnified(20.0, 9.0) == 1  # a cell or more: as it is
    assert magnified(0.0, 9.0) == 1  # no arrows


def test_stacked_regular_layers_read_the_receptive_field_of_a_5_by_5_kernel(wide):
    model = tiny("dcn_resnet_cifar")
    with inference():
        records = model.analyze(wide).records_of(SamplingRecord)
    assert [r.mean_offset for r in records] == [0.0, 0.0]  # offsets start at zero
    points = effective_points(records, 27)
    assert len(points) == 81
    assert len({(round(x, 2), round(y, 2)) for x, y, _ in points}) == 25


def test_a_new_deformable_attention_layer_samples_the_reference_grid(wide):
    model = tiny("dat_cifar")  # θ_offset's last layer starts at zero: no offsets yet
    with inference():
        record = model.analyze(wide).records_of(DeformableAttentionRecord)[0]
    assert record.keys == 64 and record.references * record.groups == record.points
    # A reference point sits at the centre of each token: token index 0, 1, … of 9-px cells.
    assert record.references[:4] == (12 + 0.5 * 9, 0.5 * 9, 12 + 1.5 * 9, 0.5 * 9)
    assert reference_points(8, 2)[0, 1].tolist() == [2.5, 0.5]
    weights = record.weights(head=1, query=10)
    assert len(weights) == 64 and 0 < sum(weights) <= 1  # the class token's key takes the rest


def test_a_new_deformable_attention_layer_answers_as_plain_attention_with_the_same_weights():
    torch.manual_seed(0)
    deformable, plain = DeformableAttention(dim=32, heads=4), Attention(32, 4)
    with torch.no_grad():
        plain.qkv.weight.copy_(torch.cat((deformable.q.weight, deformable.kv.weight)))
        plain.qkv.bias.copy_(torch.cat((deformable.q.bias, deformable.kv.bias)))
        plain.proj.load_state_dict(deformable.proj.state_dict())
    tokens = torch.randn(2, 1 + 4 * 4, 32)  # a class token and a 4×4 map
    torch.testing.assert_close(deformable(tokens, side=4), plain(tokens, side=4))


def test_condconv_mixes_one_kernel_per_image_and_a_batch_answers_as_its_images_alone():
    model = tiny("condconv_resnet_cifar")
    net = model.net
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        together = net(images)
        alone = torch.cat([net(images[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_condconv_routing_depends_on_the_input(photo, wide):
    model = tiny("condconv_resnet_cifar")
    with inference():
        first, second = (model.analyze(image).records_of(RoutingRecord) for image in (photo, wide))
    assert len(first) == 6 and all(len(r.weights) == 2 for r in first)
    assert [r.weights for r in first] != [r.weights for r in second]


def test_the_routing_decision_explained_is_the_one_the_trace_records(photo):
    """Integrated Gradients differentiate each router's logits as the network computes them on the photo."""
    condconv, moe = tiny("condconv_resnet_cifar"), tiny("moe_vit_cifar")
    with inference():
        routings = condconv.analyze(photo).records_of(RoutingRecord)
        mixture = moe.analyze(photo).records_of(ExpertRecord)[0]
    for layer in (0, len(routings) - 1):
        target = condconv.explain_routing(photo, layer, 0)
        assert target.forward(target.inputs).sigmoid()[0].tolist() == pytest.approx(routings[layer].weights, abs=1e-4)
    target = moe.explain_routing(photo, mixture.layer, 5, 0)
    assert int(target.forward(target.inputs)[0].argmax()) == mixture.choices[5]


def test_only_the_chosen_experts_run_and_the_cost_counts_only_them(photo):
    model = tiny("moe_vit_cifar")
    mixture = model.mixtures[0]
    router = torch.nn.Linear(mixture.router.in_features, len(mixture.experts))
    with torch.no_grad():
        router.weight.zero_()
        router.bias.copy_(torch.tensor([2.0] + [0.0] * (len(mixture.experts) - 1)))  # expert 0 for every token
    mixture.router = router
    calls = [0] * len(mixture.experts)
    hooks = [
        expert.register_forward_hook(lambda *_, e=e: calls.__setitem__(e, calls[e] + 1))
        for e, expert in enumerate(mixture.experts)
    ]
    try:
        with inference():
            trace = model.analyze(photo, {"per_token": 1})
            counted = count_macs(lambda: model.analyze(photo, {"per_token": 1}))
    finally:
        for hook in hooks:
            hook.remove()
    record = trace.records_of(ExpertRecord)[0]
    assert set(record.choices) == {0} and record.load[0] == 1.0
    assert calls[0] > 0 and calls[1:] == [0] * (len(calls) - 1)
    assert trace.cost.flops == counted == model.shared_flops + 65 * model.expert_flops


def test_more_experts_per_token_cost_more_and_the_formula_matches_the_counter(photo):
    model = tiny("moe_vit_cifar")
    with inference():
        one, two = (model.analyze(photo, {"per_token": k}) for k in (1, 2))
        counted = count_macs(lambda: model.analyze(photo, {"per_token": 2}))
    assert two.cost.flops == counted
    assert two.cost.flops - one.cost.flops == 65 * model.expert_flops  # one more expert for each of 65 tokens
    assert [r.per_token for r in two.records_of(ExpertRecord)] == [2]
    assert one.cost.flops == pytest.approx(one.cost.flops_full, rel=0.01)  # top-1: a dense transformer's cost


@pytest.mark.parametrize("name", ["dcn_resnet_cifar", "condconv_resnet_cifar", "dat_cifar", "moe_vit_cifar"])
def test_a_dynamic_parameter_trace_costs_what_flop_counter_mode_counts(name, photo):
    model = tiny(name)
    with inference():
        trace = model.analyze(photo)
        assert trace.cost.flops == count_macs(lambda: model.analyze(photo))
    assert sum(trace.cost.breakdown.values()) == trace.cost.flops


def test_the_cli_row_summarises_offsets_routing_and_experts(photo):
    with inference():
        rows = {
            name: tiny(name).analyze(photo).summary()
            for name in ("dcn_resnet_cifar", "condconv_resnet_cifar", "dat_cifar", "moe_vit_cifar")
        }
    assert rows["dcn_resnet_cifar"]["mean_offset_px"] == "0.00 0.00"
    assert rows["condconv_resnet_cifar"]["routing_entropy"] > 0
    assert "mean_attention_offset_px" in rows["dat_cifar"]
    assert len(rows["moe_vit_cifar"]["experts_layer2"]) == 64
