"""``python -m dynviz``: models, analyze, eval, train."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from dynviz import native
from dynviz.cards import (
    Evaluation,
    ModelCard,
    Recipe,
    load_card,
    model_summaries,
    model_table,
)
from dynviz.clips import LABELS_FILE, make_example_clips
from dynviz.data import (
    CLIP_SLIDESHOWS,
    SPLITS,
    LabelledImage,
    labelled_clips_from_photos,
    labelled_images,
)
from dynviz.evaluate import evaluate, match_best_baseline
from dynviz.inputs import IMAGE_SUFFIXES, InputError
from dynviz.models.base import ImageNetClassifier
from dynviz.models.every_frame import EveryFrame, analyst
from dynviz.progress import progress
from dynviz.runtime import every_core, inference, reuse_freed_memory
from dynviz.targets import target_table
from dynviz.trace import FrameRecord
from dynviz.train.cifar import checkpoint_path, recipe_checkpoints
from dynviz.train.loop import ADAPTABLE, TrainOptions, machine_description, trained_seconds
from dynviz.units import format_flops
from dynviz.video import VIDEO_SUFFIXES, load_input_file
from dynviz.zoo import VIDEO, accepts, create_model

EXAMPLES = Path(__file__).resolve().parent / "examples"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m dynviz", description="Run dynviz's dynamic networks from the shell."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list the registered models with their card summary")
    output = models.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument("--markdown", action="store_true", help="print a Markdown table (the README's)")

    targets = commands.add_parser("targets", help="what the project aims for with each model, and how far its card got")
    targets.add_argument("--markdown", action="store_true", help="print a Markdown table (the README's)")

    analyze = commands.add_parser(
        "analyze", help="analyse images, clips or folders of them; one row per input (or per frame of a clip)"
    )
    analyze.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    analyze.add_argument("--model", required=True)
    analyze.add_argument(
        "--set", action="append", default=[], metavar="KNOB=VALUE", help="a decision knob, e.g. tau_1=0.9"
    )
    analyze.add_argument(
        "--out", type=Path, help="FILE.csv (one row per input) or FILE.json (full traces); CSV on stdout if absent"
    )
    analyze.add_argument("--per-frame", action="store_true", help="clips: one CSV row per frame instead of per clip")

    clips = commands.add_parser("make-clips", help="make labelled clips from labelled photos (or the example clips)")
    source = clips.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="labelled photos: class subfolders or ImageNet <synset>_*.JPEG")
    source.add_argument("--examples", action="store_true", help="regenerate the bundled example clips")
    clips.add_argument("--split", choices=SPLITS, default="all", help="which half of the ImageNet sample")
    clips.add_argument("--out", type=Path, help="the folder to write clips and labels.json to")
    clips.add_argument(
        "--slideshows",
        type=int,
        default=CLIP_SLIDESHOWS,
        help=f"slideshows beside the shots (default {CLIP_SLIDESHOWS})",
    )

    evaluation = commands.add_parser("eval", help="accuracy and mean FLOPs per operating point on a labelled folder")
    evaluation.add_argument("name")
    evaluation.add_argument(
        "--data", required=True, type=Path, help="class subfolders, or ImageNet <synset>_*.JPEG files"
    )
    evaluation.add_argument(
        "--split", choices=SPLITS, default="all", help="which half of the ImageNet sample (default: all files)"
    )
    evaluation.add_argument("--out", type=Path, help="write the evaluation as JSON")
    written = evaluation.add_mutually_exclusive_group()
    written.add_argument("--card", action="store_true", help="write the evaluation into pretrained/NAME.json")
    written.add_argument(
        "--check", action="store_true", help="write it into the card as a check: a second column, on other photos"
    )

    train = commands.add_parser("train", help="produce a model's weights, then evaluate it into its card")
    train.add_argument("name")
    train.add_argument(
        "--data", type=Path, help="the training data (CIFAR-10: train/ and test/ folders, or python batches)"
    )
    train.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    train.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    train.add_argument("--resume", action="store_true", help="continue from the last epoch's checkpoint")
    train.add_argument(
        "--photos",
        type=Path,
        nargs="+",
        default=(),
        help="folders of more photos: distilling recipes learn from all of them (a teacher labels them), "
        "calibrating ones from those with an ImageNet label; labelled images of a test half are left out",
    )
    train.add_argument(
        "--adapt",
        choices=ADAPTABLE,
        default="none",
        help="gated Lite0 models: what of Lite0 learns with its gates (slowly, held near its weights): nothing "
        "(default), its BatchNorm scales and shifts, or all its weights",
    )
    train.add_argument(
        "--compile", action="store_true", help="CIFAR models on a CPU: compile the training step (always on a GPU)"
    )

    train_all = commands.add_parser(
        "train-all", help="retrain the whole CIFAR-10 zoo in dependency order, each model then evaluated into its card"
    )
    train_all.add_argument(
        "--data", required=True, type=Path, help="CIFAR-10: train/ and test/ folders, or python batches"
    )
    train_all.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    train_all.add_argument("--resume", action="store_true", help="continue each model from its last checkpoint")
    train_all.add_argument("--only", nargs="+", metavar="NAME", help="only these models (still in dependency order)")
    train_all.add_argument(
        "--compile", action="store_true", help="on a CPU: compile each training step (always on a GPU)"
    )
    train_all.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="train this many models at once, each on its share of the cores (a GPU is shared; default 1)",
    )

    args = parser.parse_args(argv)
    command = "python -m dynviz " + shlex.join(argv)
    if args.command == "models":
        return list_command(args.json, args.markdown)
    if args.command == "targets":
        print_table(target_table(), args.markdown)
        return 0
    if args.command in ("analyze", "eval"):
        native.wait()  # every input timed on the same path: a minute the first time on a machine, then a second
    if args.command == "analyze":
        return analyze_command(args.paths, args.model, parse_settings(parser, args.set), args.out, args.per_frame)
    if args.command == "make-clips":
        return make_clips_command(parser, args.images, args.split, args.out, args.slideshows)
    if args.command == "eval":
        written = "card" if args.card else "check" if args.check else None
        return eval_command(args.name, args.data, args.split, args.out, written, command)
    if args.command == "train-all":
        return train_all_command(args.data, args.device, args.resume, args.only, args.compile, args.jobs)
    return train_command(
        args.name,
        TrainOptions(args.data, args.epochs, args.device, args.resume, tuple(args.photos), args.adapt, args.compile),
        command,
    )


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def parse_settings(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, float]:
    settings = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            settings[key] = float(value)
        except ValueError:
            parser.error(f"--set {pair}: expected KNOB=NUMBER")
    return settings


def list_command(as_json: bool, as_markdown: bool) -> int:
    if as_json:
        print(json.dumps([dataclasses.asdict(summary) for summary in model_summaries()], indent=2))
    else:
        print_table(model_table(), as_markdown)
    return 0


def print_table(rows: list[dict[str, str]], as_markdown: bool) -> None:
    if as_markdown:
        print("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
        for row in rows:
            print("| " + " | ".join(value.replace("|", "\\|") for value in row.values()) + " |")
    else:
        print(pd.DataFrame(rows).to_string(index=False))


def expand(paths: list[Path]) -> Iterator[Path]:
    """Files as given; folders as the image and video files below them."""
    suffixes = (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES)
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        else:
            yield path


def bundled_model(name: str) -> Any | None:
    """The bundled model ``name``; or None, with one line on stderr, for a name the zoo does not know or whose
    weights are not trained yet."""
    try:
        return create_model(name)
    except (KeyError, FileNotFoundError) as error:
        print(error.args[0], file=sys.stderr)
        return None


def analyze_command(
    paths: list[Path], name: str, settings: dict[str, float], out: Path | None, per_frame: bool = False
) -> int:
    if (model := bundled_model(name)) is None:
        return 2
    known = [knob.name for knob in model.knobs()]
    if unknown := sorted(set(settings) - set(known)):
        print(
            f"--set {', '.join(unknown)}: {name} has no such knob; its knobs: {', '.join(known) or 'none'}",
            file=sys.stderr,
        )
        return 2
    files = list(expand(paths))
    if not files:
        print(f"no image files in {', '.join(map(str, paths))}", file=sys.stderr)
        return 1
    traces, failures = [], 0
    for path in progress(files, len(files), f"analyze {name}") if len(files) > 1 else files:
        try:
            item = load_input_file(path)
            with inference():
                traces.append(analyst(name, model, item).analyze(item, settings))
        except InputError as error:
            failures += 1
            print(error, file=sys.stderr)
        except Exception as error:  # one input must not stop the others
            failures += 1
            print(f"{path}: analysis failed ({type(error).__name__}: {error})", file=sys.stderr)
    if out is not None and out.suffix.lower() == ".json":
        out.write_text(json.dumps([t.to_dict() for t in traces], indent=1))
    else:
        rows = (
            [row for t in traces for row in FrameRecord.rows(t.input_name, t.records_of(FrameRecord))]
            if per_frame
            else [t.summary() for t in traces]
        )
        pd.DataFrame(rows).to_csv(out if out is not None else sys.stdout, index=False)
    if failures:
        print(f"{failures} of {len(files)} inputs failed", file=sys.stderr)
    return 1 if failures else 0


def eval_command(name: str, data: Path, split: str, out: Path | None, written: str | None, command: str) -> int:
    if (model := bundled_model(name)) is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="dynviz-clips-") as folder:
        if accepts(name) == VIDEO and not (data / LABELS_FILE).is_file():
            print(f"making clips from the {split} photos of {data}", file=sys.stderr)
            files = labelled_clips_from_photos(data, model.class_keys(), split, Path(folder))
            described = f"clips made from {data.name}"
        else:
            files = labelled_images(data, model.class_keys(), split)
            described = data.name
        return evaluate_into_card(model, files, described, split, out, written, command)


def evaluate_into_card(
    model: Any,
    files: list[LabelledImage],
    data: str,
    split: str,
    out: Path | None,
    written: str | None,
    command: str,
) -> int:
    """Every operating point of ``model`` and its baselines on ``files`` (described as ``data``), printed, and
    written to ``out`` and to the card when asked: as its evaluation (``written="card"``) or as one of its
    checks (``"check"``)."""
    name, default_point = model.name, model.default_point
    clips = accepts(name) == VIDEO
    statics = {}
    for baseline in model.baselines:
        try:
            static = create_model(baseline)
        except FileNotFoundError as error:
            print(f"baseline skipped: {error}", file=sys.stderr)
            continue
        statics[baseline] = EveryFrame(static) if clips else static
    points, baselines, usage = evaluate(model, files, model.operating_points(), default_point, statics)
    match = match_best_baseline(points, baselines)
    unit = "clips" if clips else "images"
    result = Evaluation(command, data, split, len(files), tuple(points), tuple(baselines), match, usage, unit)
    for point in (*points, *baselines):
        print(
            f"{point.name:>16}  top-1 {100 * point.top1:5.1f}%  top-5 {100 * point.top5:5.1f}%  "
            f"{format_flops(point.mean_flops)} FLOPs  {point.mean_latency_ms:6.1f} ms"
            + (f"  exits {[round(r, 3) for r in point.exit_rates]}" if point.exit_rates else "")
            + (f"  frames processed {100 * point.frames_processed:.1f}%" if point.frames_processed is not None else "")
            + (f"  per-frame top-1 {100 * point.frame_top1:.1f}%" if point.frame_top1 is not None else "")
            + (f"  cuts found {100 * point.cuts_found:.0f}%" if point.cuts_found is not None else "")
        )
    if match is not None:
        print(match.describe())
    if out is not None:
        out.write_text(json.dumps(dataclasses.asdict(result), indent=2))
    if written == "check":
        if (card := load_card(name)) is None:
            print(f"{name} has no card to add a check to: evaluate it with --card first", file=sys.stderr)
            return 2
        print(f"check written: {card.with_check(result).save()}")
    if written == "card":
        card = load_card(name) or ModelCard(name, model.about, flops_full=0.0, default_point=default_point)
        if clips:  # clips differ in length: the static network on every frame, on average
            flops_full = baselines[0].mean_flops
        else:
            with inference():
                flops_full = model.analyze(files[0].load()).cost.flops_full
        # The method's description and the default point are refreshed too: a card describes the model its figures
        # were measured on. Its license and data lines stay: the training run that made the weights wrote them.
        about = dataclasses.replace(model.about, license=card.about.license, data=card.about.data)
        card = dataclasses.replace(
            card, about=about, flops_full=flops_full, default_point=default_point, evaluation=result
        )
        print(f"card written: {card.save()}")
    return 0


def make_clips_command(
    parser: argparse.ArgumentParser, images: Path | None, split: str, out: Path | None, slideshows: int
) -> int:
    if images is None:
        make_example_clips(EXAMPLES)
        print(f"example clips written to {EXAMPLES}", file=sys.stderr)
        return 0
    if out is None:
        parser.error("make-clips --images needs --out")
    clips = labelled_clips_from_photos(images, ImageNetClassifier.class_keys(), split, out, slideshows)
    print(f"{len(clips)} clips and {LABELS_FILE} written to {out}", file=sys.stderr)
    return 0


def train_command(name: str, options: TrainOptions, command: str) -> int:
    from dynviz.train import RECIPES

    if name not in RECIPES:
        print(f"no recipe for {name!r}; recipes: {', '.join(sorted(RECIPES))}", file=sys.stderr)
        return 2
    reuse_freed_memory()
    start = time.perf_counter()
    try:
        with every_core():
            card = RECIPES[name](options)
    except FileNotFoundError as error:
        print(f"train {name}: {error}", file=sys.stderr)
        return 2
    # A run resumed from a checkpoint: the training time of every stretch and stage, not only the last one's.
    seconds = sum(filter(None, map(trained_seconds, recipe_checkpoints(name)))) or time.perf_counter() - start
    card = dataclasses.replace(card, recipe=Recipe(command, round(seconds, 1), machine_description()))
    card.save()
    return main(["eval", name, "--data", str(options.data), "--split", "test", "--card"])


def train_all_command(data: Path, device: str, resume: bool, only: list[str] | None, compile: bool, jobs: int) -> int:
    """Each CIFAR model's own ``train`` command, in dependency order, ``jobs`` at a time (each then on its share
    of the cores, its output in a log beside its checkpoint); the card records that command."""
    from dynviz.train import CIFAR_ZOO, train_in_order, training_order

    unknown = set(only or ()) - set(CIFAR_ZOO)
    if unknown:
        print(f"not in the CIFAR zoo: {', '.join(sorted(unknown))}; it holds {', '.join(CIFAR_ZOO)}", file=sys.stderr)
        return 2
    flags = [flag for flag, asked in (("--resume", resume), ("--compile", compile)) if asked]
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))

    def log(name: str) -> Path:
        return checkpoint_path(name).with_suffix(".log")

    def start(name: str) -> subprocess.Popen:
        argv = ["train", name, "--data", str(data), "--device", device, *flags]
        command = [sys.executable, "-m", "dynviz", *argv]
        if jobs == 1:
            print(f"train-all: {shlex.join(argv)}", file=sys.stderr, flush=True)
            return subprocess.Popen(command)
        log(name).parent.mkdir(parents=True, exist_ok=True)
        print(
            f"train-all: {shlex.join(argv)}  (OMP_NUM_THREADS={threads}; output in {log(name)})",
            file=sys.stderr,
            flush=True,
        )
        with log(name).open("a") as output:
            return subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": threads}
            )

    names = [name for name in training_order(CIFAR_ZOO) if not only or name in only]
    if failed := train_in_order(CIFAR_ZOO, names, start, jobs):
        output = "above" if jobs == 1 else f"in {log(failed)}"
        print(f"train-all: {failed} failed (its output {output}); no model was started after it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
