"""The compiled executed paths: the fused kernels (dynviz.fused) and the C++ operators (dynviz.native) compute
what the modules compute, at the price FlopCounterMode counts, and the eager modules run where they are off."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import encode, pattern, tiny, tiny_dynconv, tiny_lite

from dynviz import native
from dynviz.cost import count_macs
from dynviz.fused import FusedNetwork, build_at_load, inference_path
from dynviz.inputs import load_image
from dynviz.models.gates import Gate
from dynviz.models.resnet_cifar import ResNetCifar
from dynviz.runtime import INFERENCE_THREADS
from dynviz.trace import BlockRecord, ChannelRecord, MaskRecord


def with_trained_statistics(net: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm layers that do something, so that folding them into the convolutions is tested."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(params=["resnet", "lite"])
def network(request) -> tuple[torch.nn.Module, torch.Tensor]:
    if request.param == "resnet":
        return with_trained_statistics(ResNetCifar(14)), torch.randn(1, 3, 32, 32)
    return with_trained_statistics(tiny_lite()), torch.randn(1, 3, 45, 45)  # odd: TF's asymmetric padding


def test_the_fused_path_answers_and_costs_what_the_modules_do(network):
    net, x = network
    fused = inference_path(net, x.shape)
    assert isinstance(fused, FusedNetwork)
    with torch.inference_mode():
        assert torch.allclose(fused(x), net(x), atol=1e-4)
        assert count_macs(lambda: fused(x)) == count_macs(lambda: net(x)) > 0


def test_the_fused_path_gives_the_last_feature_map_as_the_modules_do():
    net, x = with_trained_statistics(tiny_lite()), torch.randn(1, 3, 45, 45)
    with torch.inference_mode():
        assert torch.allclose(inference_path(net, x.shape).features(x), net.features(x), atol=1e-4)


def test_without_fusing_inference_runs_the_modules(network, monkeypatch):
    monkeypatch.setenv("DYNVIZ_COMPILE", "0")
    net, x = network
    assert inference_path(net, x.shape) is net


def test_the_fused_path_follows_new_weights(network):
    net, x = network
    before = inference_path(net, x.shape)
    with torch.no_grad():
        net.stem[0].weight.mul_(2)
    after = inference_path(net, x.shape)
    with torch.inference_mode():
        assert after is not before and torch.allclose(after(x), net(x), atol=1e-4)


def test_the_path_built_at_load_is_the_one_inference_runs(network):
    """oneDNN lays weights out for the threads a kernel may use: a path built on two threads and run on one
    reorders them at every call, so a path is built per thread count, and at load for inference's."""
    net, x = network
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(INFERENCE_THREADS + 1)
        build_at_load(net, x.shape)
        assert torch.get_num_threads() == INFERENCE_THREADS + 1
        other = inference_path(net, x.shape)
        torch.set_num_threads(INFERENCE_THREADS)
        first = inference_path(net, x.shape)
        assert inference_path(net, x.shape) is first is not other
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def operators() -> None:
    """The C++ operators, built (about a minute the first time on a machine) and loaded."""
    if not native.wait():
        if os.environ.get("CI") == "true":
            pytest.fail("the C++ operators were not built (CI=true: g++ and ninja are installed there)")
        pytest.skip("the C++ operators cannot be built here (g++ or ninja missing, or DYNVIZ_COMPILE=0)")


def test_operators_built_for_another_processor_are_not_loaded_here(monkeypatch):
    """A home folder shared or moved between machines: what -march=native built for one is built again."""
    here = native.build_directory()
    monkeypatch.setattr(native, "instruction_sets", lambda: "flags : fpu sse2 avx2 avx512f avx512bw")
    assert native.build_directory() != here and native.build_directory().parent == here.parent


@pytest.mark.slow
def test_a_build_killed_midway_does_not_stop_the_next(operators, tmp_path):
    """A server stopped, or a command that exits, while its build thread compiles leaves PyTorch's lock file
    behind: the next process builds and loads the operators all the same (before, it waited forever)."""
    environment = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    build = "import sys; from dynviz import native; sys.exit(0 if native.wait({}) else 1)"
    repository = Path(__file__).parents[1]
    killed = subprocess.Popen([sys.executable, "-c", build.format(600)], env=environment, cwd=repository)
    left_behind = tmp_path / native.build_directory().name / "lock"
    deadline = time.monotonic() + 120
    while not left_behind.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.kill()
    killed.wait()
    assert left_behind.exists()
    next_build = subprocess.run([sys.executable, "-c", build.format(300)], env=environment, cwd=repository, timeout=400)
    assert next_build.returncode == 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_gate_operator_computes_and_costs_what_the_gate_does(operators, channels_last, monkeypatch):
    torch.manual_seed(0)
    gate = Gate(24, 5).eval()
    torch.nn.init.normal_(gate.fc2.weight)
    x = torch.randn(1, 24, 7, 9)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    with torch.inference_mode():
        native_logits, native_macs = gate.logits_of_one(x), count_macs(lambda: gate.logits_of_one(x))
        monkeypatch.setenv("DYNVIZ_COMPILE", "0")
        torch_logits, torch_macs = gate.logits_of_one(x), count_macs(lambda: gate.logits_of_one(x))
    torch.testing.assert_close(native_logits, torch_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(native_logits, gate(x)[0])
    assert native_macs == torch_macs == 24 * 16 + 16 * 5


GATED = {  # each gated model, tiny, and what it decided, record by record
    "skip_resnet_cifar": (lambda: tiny("skip_resnet_cifar"), BlockRecord, lambda r: r.executed),
    "channel_gate_resnet_cifar": (lambda: tiny("channel_gate_resnet_cifar"), ChannelRecord, lambda r: r.active),
    "dynconv_resnet_cifar": (lambda: tiny("dynconv_resnet_cifar"), MaskRecord, lambda r: r.computed),
    # Lite's MBConv blocks, one without expansion and one with a 5×5 depthwise
    "DynConv on MBConv blocks": (lambda: tiny_dynconv(tiny_lite()), MaskRecord, lambda r: r.computed),
}


@pytest.mark.parametrize("name", GATED)
def test_a_gated_model_decides_and_spends_the_same_on_either_path(name, operators, monkeypatch):
    build, record, decided = GATED[name]
    model = build()
    with_trained_statistics(model.net.backbone)
    image = load_image(encode(pattern(40, 32, seed=3), "PNG"), "tiny.png")
    settings = {"threshold": 0.9}
    with torch.inference_mode():
        fused = model.analyze(image, settings)
        counted = count_macs(lambda: model.analyze(image, settings))  # the C++ operators priced by their formulas
        monkeypatch.setenv("DYNVIZ_COMPILE", "0")
        eager = model.analyze(image, settings)
    decisions = [decided(r) for r in fused.records_of(record)]
    assert decisions == [decided(r) for r in eager.records_of(record)]
    units = [on for d in decisions for on in (d if isinstance(d, tuple) else (d,))]
    assert 0 < sum(units) < len(units)  # some units ran, some did not
    assert fused.cost.flops == eager.cost.flops == counted
    assert fused.prediction.label == eager.prediction.label
    assert fused.prediction.top[0].probability == pytest.approx(eager.prediction.top[0].probability, abs=1e-4)
