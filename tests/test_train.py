"""The training pipeline without training: data layouts, augmentation, losses, budgeted calibration,
and one tiny epoch to check checkpoints and resume."""

import dataclasses
import importlib.util
import itertools
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dynviz.data import labelled_images
from dynviz.models.base import forced_exit
from dynviz.models.cifar import CIFAR10_CLASSES, Cifar10Classifier
from dynviz.models.msdnet import MSDNet, MSDNetConfig
from dynviz.train import CIFAR_ZOO, cifar, loop, train_in_order, training_order
from dynviz.train.cifar import PADDING, Ensemble, augment, load_train_split, prepare
from dynviz.train.exits import (
    budgeted_thresholds,
    exit_index,
    fit_temperature,
    search_thresholds,
)
from dynviz.train.loop import ADAPTABLE, Schedule, TensorSet, TrainOptions, fit
from dynviz.train.losses import (
    ANNEALED_FRACTION,
    LABEL_SMOOTHING,
    distillation,
    exit_losses,
    self_distilled_exit_losses,
    sparsity_criterion,
    teacher_matching,
)

KEYS = Cifar10Classifier.class_keys()


def write_batches(root: Path, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8), b"labels": list(range(per_batch))}
        (folder / name).write_bytes(pickle.dumps(batch))
    return root


def write_folders(root: Path) -> Path:
    for split in ("train", "test"):
        for label in CIFAR10_CLASSES[:2]:
            (root / split / label).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(root / split / label / f"{i}.png")
    return root


def test_python_batches_and_image_folders_give_the_same_kind_of_labelled_set(tmp_path):
    batches = labelled_images(write_batches(tmp_path / "a"), KEYS, "test")
    assert [item.label for item in batches] == [0, 1, 2, 3]
    assert batches[1].load().size == (32, 32)
    assert len(labelled_images(tmp_path / "a", KEYS, "train")) == 20
    folders = labelled_images(write_folders(tmp_path / "b"), KEYS, "test")
    assert len(folders) == 6 and {item.label for item in folders} == {0, 1}
    assert all("test" in item.name for item in folders)


def test_the_validation_split_is_carved_from_train_and_fixed(tmp_path):
    options = TrainOptions(write_batches(tmp_path))
    train, validation = load_train_split(options, validation_images=5)
    again = load_train_split(options, validation_images=5)[1]
    assert len(train) == 15 and len(validation) == 5
    assert torch.equal(validation.images, again.images)


def test_augmentation_crops_and_flips_reproducibly():
    batch = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    first = prepare(batch, torch.Generator().manual_seed(1))
    assert first.shape == (8, 3, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, prepare(batch, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, prepare(batch, None))


def test_batch_augmentation_is_a_crop_of_the_zero_padded_image_mirrored_or_not():
    batch = torch.randint(1, 255, (64, 3, 32, 32), dtype=torch.uint8)  # no zeros: padding shows as 0
    augmented = augment(batch, torch.Generator().manual_seed(0))
    assert augmented.shape == batch.shape and augmented.dtype == torch.uint8
    padded = torch.nn.functional.pad(batch, (PADDING,) * 4)
    window = 2 * PADDING + 1
    found = set()
    for image, original in zip(augmented, padded):
        crops = {
            (y, x, mirrored)
            for y in range(window)
            for x in range(window)
            for mirrored in (False, True)
            if torch.equal(
                image, original[:, y : y + 32, x : x + 32].flip(-1) if mirrored else original[:, y : y + 32, x : x + 32]
            )
        }
        assert crops, "every image is one crop of its padded original, flipped or not"
        found |= crops
    assert {mirrored for _, _, mirrored in found} == {False, True}
    assert len({(y, x) for y, x, _ in found}) > 20  # offsets spread over the 9×9 window


def test_losses_sum_exits_and_distillation_vanishes_when_student_equals_teacher():
    labels = torch.tensor([0, 1])
    logits = [torch.randn(2, 10) for _ in range(3)]
    smoothed = sum(torch.nn.functional.cross_entropy(z, labels, label_smoothing=LABEL_SMOOTHING) for z in logits)
    assert torch.isclose(exit_losses(logits, labels), smoothed)
    assert distillation(logits[0], logits[0]).abs() < 1e-6
    assert self_distilled_exit_losses(logits, labels) > 0


def test_an_ensemble_teacher_predicts_its_members_mean_and_every_exit_matches_it():
    members = [torch.nn.Linear(4, 10) for _ in range(2)]
    x = torch.randn(3, 4)
    teacher = Ensemble(*members)(x)
    assert torch.allclose(teacher.softmax(-1), sum(m(x).softmax(-1) for m in members) / 2, atol=1e-6)
    assert teacher_matching([teacher, teacher], teacher).abs() < 1e-6
    one_off = [teacher, torch.randn(3, 10)]
    assert torch.isclose(teacher_matching(one_off, teacher), teacher_matching(one_off[1:], teacher))


def test_dynconv_s_criterion_pulls_the_network_to_its_target_and_opens_the_block_bounds_over_a_third():
    shares = [torch.full((4,), 0.2), torch.full((4,), 0.6)]  # a sparse block and a dense one
    costs = [1.0, 1.0]  # equal weight: the network spends 0.4 of its maskable FLOPs
    at_start = sparsity_criterion(shares, costs, 0.4, progress=0.0)
    opened = sparsity_criterion(shares, costs, 0.4, progress=ANNEALED_FRACTION)
    assert opened == pytest.approx(0.0)  # on target as a network; each block free within [0, 1]
    assert at_start == pytest.approx(0.2**2)  # both blocks 0.2 away from the bounds, which start at the target
    assert sparsity_criterion(shares, [1.0, 3.0], 0.4, progress=1.0) == pytest.approx((0.5 - 0.4) ** 2)
    assert sparsity_criterion(shares, costs, 0.4, 0.1) < at_start  # the bounds open gradually


def exits_that_know_when_they_are_right(inputs: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Three exits, each more often right than the one before, and surer when right."""
    torch.manual_seed(0)
    correct = torch.rand(3, inputs) < torch.tensor([[0.6], [0.75], [0.85]])
    confidences = (torch.rand(3, inputs) * 0.6 + 0.4 * correct).clamp(max=0.99)
    return confidences, correct


def test_budgeted_thresholds_are_the_most_accurate_within_each_budget():
    """At least as accurate as the best of an exhaustive coarse grid within the same FLOPs, and never over."""
    confidences, correct = exits_that_know_when_they_are_right()
    cumulative = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)  # shares of the static network
    columns = torch.arange(confidences.shape[1])

    def outcome(thresholds: tuple[float, ...]) -> tuple[float, float]:
        exits = exit_index(confidences, thresholds)
        return float(correct[exits, columns].float().mean()), float(cumulative[exits].mean())

    budgets = (0.3, 0.5, 0.7)
    chosen = budgeted_thresholds(confidences, correct, cumulative, budgets)
    coarse = [outcome(t) for t in itertools.product([i / 10 for i in range(10)] + [1.0], repeat=2)]
    assert list(chosen) == list(budgets)  # each budget buys more accuracy than the one below
    for budget, thresholds in chosen.items():
        accuracy, flops = outcome(thresholds)
        assert flops <= budget
        assert accuracy >= max(a for a, f in coarse if f <= budget)
    assert outcome(chosen[0.3])[0] < outcome(chosen[0.7])[0]
    assert budgeted_thresholds(confidences, correct, cumulative, (0.1,)) == {}  # below the first exit's cost


def test_forced_exit_sends_every_input_to_that_exit():
    confidences = torch.rand(3, 50)
    for k in range(3):
        assert set(exit_index(confidences, forced_exit(3, k)).tolist()) == {k}


def test_a_run_interrupted_after_an_epoch_and_resumed_ends_with_the_weights_of_an_uninterrupted_run(
    tmp_path, monkeypatch
):
    data = TensorSet(torch.randint(0, 255, (32, 3, 32, 32), dtype=torch.uint8), torch.arange(32) % 10)
    schedule = Schedule(epochs=2, batch_size=8)

    def fresh() -> MSDNet:
        torch.manual_seed(123)
        return MSDNet(MSDNetConfig.tiny())

    uninterrupted = fresh()
    fit(uninterrupted, exit_losses, data, data, prepare, schedule, tmp_path / "straight.pt")

    checkpoint, validations = tmp_path / "interrupted.pt", []
    validate = loop.validation_accuracy

    def interrupted_in_the_second_epoch(*args):
        validations.append(args)
        if len(validations) == 2:
            raise KeyboardInterrupt  # as a stopped session stops a run
        return validate(*args)

    monkeypatch.setattr(loop, "validation_accuracy", interrupted_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(fresh(), exit_losses, data, data, prepare, schedule, checkpoint)
    monkeypatch.undo()
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 0
    first_stretch = loop.trained_seconds(checkpoint)
    assert first_stretch > 0

    resumed = MSDNet(MSDNetConfig.tiny())
    history = fit(resumed, exit_losses, data, data, prepare, schedule, checkpoint, resume=True)
    assert len(history) == 2  # the first epoch's validation comes from the checkpoint
    assert loop.trained_seconds(checkpoint) > first_stretch  # the card's training time counts both stretches
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted.state_dict().values(), resumed.state_dict().values()))


def test_the_card_s_training_time_counts_every_stage_of_a_recipe_and_no_other_model_s(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "CHECKPOINTS", tmp_path)
    for file in ("ranet_cifar.pt", "ranet_cifar-distilled.pt", "ranet_cifar_wide.pt", "resnet32_cifar.pt"):
        (tmp_path / file).touch()
    assert cifar.checkpoint_path("ranet_cifar", "distilled") == tmp_path / "ranet_cifar-distilled.pt"
    assert cifar.recipe_checkpoints("ranet_cifar") == [
        tmp_path / "ranet_cifar.pt",
        tmp_path / "ranet_cifar-distilled.pt",
    ]


def test_a_run_killed_while_saving_its_checkpoint_resumes_from_the_last_whole_one(tmp_path, monkeypatch):
    data = TensorSet(torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16) % 10)
    checkpoint, schedule = tmp_path / "tiny.pt", Schedule(epochs=2, batch_size=8)
    save, saves = torch.save, []

    def killed_midway_through_the_second(state, path):
        saves.append(path)
        if len(saves) == 2:
            Path(path).write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt  # a session's end kills the run as it writes
        save(state, path)

    monkeypatch.setattr(torch, "save", killed_midway_through_the_second)
    with pytest.raises(KeyboardInterrupt):
        fit(MSDNet(MSDNetConfig.tiny()), exit_losses, data, data, prepare, schedule, checkpoint)
    monkeypatch.undo()
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 0  # the first epoch's, whole
    resumed = fit(MSDNet(MSDNetConfig.tiny()), exit_losses, data, data, prepare, schedule, checkpoint, resume=True)
    assert len(resumed) == 2


def test_a_checkpoint_of_another_schedule_is_not_resumed(tmp_path):
    data = TensorSet(torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16) % 10)
    checkpoint = tmp_path / "tiny.pt"
    fit(MSDNet(MSDNetConfig.tiny()), exit_losses, data, data, prepare, Schedule(epochs=1, batch_size=8), checkpoint)
    history = fit(
        MSDNet(MSDNetConfig.tiny()),
        exit_losses,
        data,
        data,
        prepare,
        Schedule(epochs=1, batch_size=4),
        checkpoint,
        resume=True,
    )
    assert len(history) == 1  # trained its epoch rather than taking the other schedule's


def test_train_all_puts_every_model_after_those_it_starts_from():
    zoo = {"gated": ("twin",), "twin": (), "alone": (), "on_gated": ("gated", "alone")}
    order = training_order(zoo)
    assert sorted(order) == sorted(zoo)
    assert all(order.index(dependency) < order.index(name) for name, needs in zoo.items() for dependency in needs)
    assert order.index("twin") < order.index("alone")  # otherwise in the order given
    with pytest.raises(ValueError, match="circle"):
        training_order({"a": ("b",), "b": ("a",)})
    real = training_order(CIFAR_ZOO)
    assert real.index("resnet32_cifar") < min(real.index(n) for n in ("skip_resnet_cifar", "dynconv_resnet_cifar"))
    assert real.index("resnet20_cifar") < real.index("dcn_resnet_cifar")
    assert real.index("vit_cifar") < real.index("moe_vit_cifar")


class FakeJob:
    """A training that runs for ``polls`` polls, then ends with ``status`` (and calls ``ended``)."""

    def __init__(self, polls: int, status: int = 0, ended=lambda: None):
        self.polls, self.status, self.ended = polls, status, ended

    def poll(self) -> int | None:
        self.polls -= 1
        if self.polls >= 0:
            return None
        self.ended()
        return self.status


def test_train_all_runs_jobs_at_once_each_after_those_it_starts_from():
    zoo = {"twin": (), "gated": ("twin",), "other_gated": ("twin",), "alone": (), "last": ("gated",)}

    def run(names, jobs):
        running, finished, started, most = set(), set(), [], 0

        def start(name):
            nonlocal most
            assert all(dependency in finished or dependency not in names for dependency in zoo[name])
            running.add(name), started.append(name)
            most = max(most, len(running))
            return FakeJob(polls=2, ended=lambda: (running.discard(name), finished.add(name)))

        assert train_in_order(zoo, names, start, jobs, wait_s=0) is None
        return started, most

    started, most = run(training_order(zoo), jobs=2)
    assert sorted(started) == sorted(zoo) and most == 2
    assert run(["gated", "last"], jobs=3) == (["gated", "last"], 1)  # "twin" is trained already


def test_train_all_starts_nothing_after_a_failure_and_names_it():
    zoo = {"twin": (), "gated": ("twin",), "alone": ()}
    started = []

    def start(name):
        started.append(name)
        return FakeJob(polls=1, status=1 if name == "twin" else 0)

    assert train_in_order(zoo, list(zoo), start, jobs=1, wait_s=0) == "twin"
    assert started == ["twin"]


def test_train_all_runs_each_model_s_own_train_command_with_its_flags(monkeypatch, tmp_path):
    import dynviz.__main__ as cli

    commands = []
    monkeypatch.setattr(cli, "checkpoint_path", lambda name: tmp_path / f"{name}.pt")
    monkeypatch.setattr(cli.subprocess, "Popen", lambda command, **_: commands.append(command) or FakeJob(0))
    assert cli.train_all_command(Path("cifar"), "cpu", True, ["skip_resnet_cifar", "resnet32_cifar"], True, 2) == 0
    assert [command[4] for command in commands] == ["resnet32_cifar", "skip_resnet_cifar"]
    assert all(
        command[2:4] == ["dynviz", "train"] and {"--resume", "--compile"} <= set(command) for command in commands
    )


def test_training_and_evaluation_import_neither_the_app_nor_captum():
    """A GPU machine lent for training has torch, pandas and OpenCV but not streamlit, plotly or captum: the
    train and eval commands, every recipe and every model must load without them."""
    script = "import sys, dynviz.__main__, dynviz.train, dynviz.models; print(*sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert not {module.split(".")[0] for module in loaded.split()} & {"streamlit", "plotly", "captum"}


def test_the_training_speed_bench_times_every_cifar_recipe_s_network():
    path = Path(__file__).parents[1] / "bench" / "train_speed.py"
    spec = importlib.util.spec_from_file_location("train_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert set(bench.NETWORKS) == set(CIFAR_ZOO)
    shared = dataclasses.replace(cifar.schedule(TrainOptions(None)), batch_size=8)
    images_per_second, _ = bench.images_per_second("resnet8_cifar", shared, "cpu", 1, False)
    assert images_per_second > 0


def test_the_cifar_schedule_compiles_on_a_gpu_and_on_a_cpu_only_when_asked():
    assert not cifar.schedule(TrainOptions(None)).compile
    assert cifar.schedule(TrainOptions(None, compile=True)).compile
    assert cifar.schedule(TrainOptions(None, device="cuda")).compile


def test_a_recipe_without_data_says_what_it_needs():
    from dynviz.train import RECIPES

    with pytest.raises(SystemExit, match="needs --data"):
        RECIPES["resnet20_cifar"](TrainOptions(None))


def test_the_offset_predictors_of_deformable_convolution_learn_at_a_tenth_of_the_rate():
    from dynviz.models.dcn import OFFSET_LR_SCALE, deformable_resnet

    net = deformable_resnet(depth=14, deformable_blocks=1)
    groups = loop.parameter_groups(net, Schedule(epochs=1))
    offsets = {id(p) for m in net.modules() if hasattr(m, "offset") for p in m.offset.parameters()}
    slow = [g for g in groups if g["lr_scale"] == OFFSET_LR_SCALE]
    assert {id(p) for g in slow for p in g["params"]} == offsets and len(offsets) == 4
    assert [g["weight_decay"] for g in slow] == [Schedule(epochs=1).weight_decay, 0.0]  # the kernels decay
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_networks_that_regroup_the_batch_by_image_train_in_the_standard_layout_and_the_others_channels_last():
    from dynviz.models.condconv import condconv_resnet
    from dynviz.models.dcn import deformable_resnet
    from dynviz.models.resnet_cifar import ResNetCifar

    for per_image in (condconv_resnet(depth=8, experts=2), deformable_resnet(depth=14, deformable_blocks=1)):
        assert loop.training_layout(per_image) == torch.contiguous_format
    assert loop.training_layout(ResNetCifar(8)) == torch.channels_last
    assert loop.training_layout(MSDNet(MSDNetConfig.tiny())) == torch.channels_last


def test_the_weight_pull_holds_a_pretrained_part_near_its_start_and_slows_it(tmp_path):
    """L2-SP: zero at the start, (α/2)·‖w − w⁰‖² after a step; the pretrained part learns at its share of the
    rate and is not decayed, the rest as before."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    schedule = Schedule(epochs=1, batch_size=8, pretrained_lr_scale=0.1, pretrained_pull=0.5)
    groups = loop.parameter_groups(net, schedule, pretrained=net[0])
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 0.1]
    assert groups[-1]["weight_decay"] == 0.0 and {id(p) for p in groups[-1]["params"]} == {
        id(p) for p in net[0].parameters()
    }
    pull = loop.WeightPull(net[0], strength=0.5)
    assert pull() == 0
    with torch.no_grad():
        net[0].weight += 2.0
    assert pull().item() == pytest.approx(0.5 / 2 * 4 * 16)

    def trained(pull_strength: float) -> float:
        torch.manual_seed(0)
        model = MSDNet(MSDNetConfig.tiny())
        start = [p.detach().clone() for p in model.parameters()]
        data = TensorSet(torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16) % 10)
        tuned = Schedule(epochs=1, batch_size=8, peak_lr=0.5, pretrained_lr_scale=1.0, pretrained_pull=pull_strength)
        fit(model, exit_losses, data, data, prepare, tuned, tmp_path / f"{pull_strength}.pt", pretrained=model)
        return sum(((p - s) ** 2).sum().item() for p, s in zip(model.parameters(), start))

    assert trained(pull_strength=50.0) < trained(pull_strength=0.0)


def test_distillation_photos_leave_out_every_labelled_image_of_a_test_half(tmp_path):
    from dynviz.data import split_of, training_photos

    keys = (("n01440764", "tench"), ("n02102040", "springer"))
    names = [f"n01440764_ILSVRC2012_val_{i:08d}.JPEG" for i in range(12)]
    (tmp_path / "val").mkdir()
    (tmp_path / "pool" / "caltech" / "chair").mkdir(parents=True)
    (tmp_path / "pool" / "imagenette" / "n02102040").mkdir(parents=True)
    for name in names:
        Image.new("RGB", (8, 8)).save(tmp_path / "val" / name)
    for i in range(6):
        Image.new("RGB", (8, 8)).save(tmp_path / "pool" / "caltech" / "chair" / f"{i}.jpg")
        Image.new("RGB", (8, 8)).save(tmp_path / "pool" / "imagenette" / "n02102040" / f"x{i}.JPEG")
    photos = training_photos([tmp_path / "val", tmp_path / "pool"], keys)
    unlabelled = [p for p in photos if p.parent.name == "chair"]
    assert len(unlabelled) == 6  # photos of no known class are all used
    labelled = [p for p in photos if p.parent.name != "chair"]
    assert labelled and all(split_of(p) == "calib" for p in labelled)
    assert {p.name for p in labelled if p.parent.name == "val"} == {n for n in names if split_of(Path(n)) == "calib"}
    assert photos == training_photos([tmp_path / "val", tmp_path / "pool"], keys)  # the same, every time

    from dynviz.train.loop import calibration_files

    options = TrainOptions(tmp_path / "val", photos=(tmp_path / "pool" / "caltech", tmp_path / "pool" / "imagenette"))
    fitted = calibration_files(options, keys)  # the unlabelled chairs add none, and stop nothing
    assert {f.path for f in fitted} == {p for p in labelled}


def test_a_checkpoint_from_before_a_schedule_field_was_added_resumes(tmp_path):
    """The new field reads as its default, so a run stopped by an upgrade continues instead of starting over."""
    data = TensorSet(torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16) % 10)
    checkpoint, schedule = tmp_path / "tiny.pt", Schedule(epochs=1, batch_size=8)
    fit(MSDNet(MSDNetConfig.tiny()), exit_losses, data, data, prepare, schedule, checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    del state["schedule"]["pretrained_pull"]
    state["history"] = [[-1.0]]
    torch.save(state, checkpoint)
    assert fit(MSDNet(MSDNetConfig.tiny()), exit_losses, data, data, prepare, schedule, checkpoint, resume=True) == [
        [-1.0]
    ]


def test_thresholds_for_four_exits_are_searched_on_a_coarser_grid_within_the_harm_cap():
    """GFNet's glance and three focus steps: an exhaustive 201-value grid per exit would be 8 million tries."""
    torch.manual_seed(0)
    confidences, correct = torch.rand(4, 60), torch.rand(4, 60) < 0.7
    cumulative = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    thresholds = search_thresholds(confidences, correct, cumulative, harm_cap=0.05)
    exits = exit_index(confidences, thresholds)
    assert len(thresholds) == 3 and float(cumulative[exits].mean()) < 4.0
    assert float((correct[-1] & ~correct)[exits, torch.arange(60)].float().mean()) <= 0.05


def test_a_temperature_is_fitted_to_logits_and_labels_made_in_inference_mode():
    """The app and the benchmarks run their networks in inference mode; calibration then differentiates."""
    torch.manual_seed(0)
    with torch.inference_mode():
        labels = torch.randint(0, 5, (200,))
        predicted = torch.where(torch.arange(200) % 3 == 0, (labels + 1) % 5, labels)  # a third wrong
        logits = 8.0 * torch.nn.functional.one_hot(predicted, 5).float()  # and sure of every answer
    assert fit_temperature(logits, labels) > 1.0  # softened


def test_the_validation_curve_a_recipe_writes_is_the_one_the_card_shows(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from dynviz import cards
    from dynviz.cards import ModelCard, load_card, validation_curve
    from dynviz.train.cifar import validation_metadata

    about = load_card("resnet20_cifar").about
    monkeypatch.setattr(cards, "PRETRAINED", tmp_path)
    history = [[0.41, 0.5], [0.62, 0.71], [0.7, 0.8123456]]
    save_file({"w": torch.zeros(2)}, tmp_path / "trained.safetensors", metadata=validation_metadata(history))
    save_file({"w": torch.zeros(2)}, tmp_path / "calibrated.safetensors")  # weights without a training curve
    trained = ModelCard("trained", about, 1.0, "default", "trained.safetensors")
    assert validation_curve(trained) == ((0.41, 0.5), (0.62, 0.71), (0.7, 0.8123))
    assert validation_curve(ModelCard("calibrated", about, 1.0, "default", "calibrated.safetensors")) == ()
    assert validation_curve(ModelCard("none", about, 1.0, "default")) == ()


@pytest.mark.parametrize("adapt", ADAPTABLE)
def test_distilling_gates_changes_lite0_only_where_it_adapts_and_its_card_says_so(tmp_path, monkeypatch, adapt):
    from dynviz.models import skip
    from dynviz.train import distill

    monkeypatch.setattr(distill, "checkpoint_path", lambda name: tmp_path / f"{name}.pt")
    monkeypatch.setattr(distill, "save_gated", lambda net, model, metadata, about: about or model.about)
    monkeypatch.setattr(distill, "Schedule", lambda **recipe: Schedule(**(recipe | {"batch_size": 2})))
    net = skip.SkipNetwork(skip.Lite0Skip.backbone(), constant_start=True, noise=False)
    norms = {id(p) for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    lite0 = [(p.detach().clone(), id(p) in norms) for p in net.backbone.parameters()]
    gates = [p.detach().clone() for p in net.gates.parameters()]
    squares = torch.randint(0, 255, (4, 3, distill.STORED_SIDE, distill.STORED_SIDE), dtype=torch.uint8)
    labelled = TensorSet(squares[:2], torch.tensor([0, 1]))
    options = TrainOptions(tmp_path, epochs=1, adapt=adapt)
    about = distill.distill("lite0_skip", net, 0.5, options, skip.Lite0Skip, (labelled, squares))
    assert any(not torch.equal(p, g) for p, g in zip(net.gates.parameters(), gates))
    moved = [(not torch.equal(p, w), is_norm) for p, (w, is_norm) in zip(net.backbone.parameters(), lite0)]
    assert any(m for m, is_norm in moved if is_norm) == (adapt != "none")
    assert any(m for m, is_norm in moved if not is_norm) == (adapt == "backbone")
    assert ("fine-tuned" in about.license) == (adapt != "none")  # the card says what happened to Lite0's weights
    assert ("BatchNorm" in about.license) == (adapt == "norms")
