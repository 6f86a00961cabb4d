"""Targets read from the cards: met or missed, and by how much, from measured points only."""

from dynviz.__main__ import main
from dynviz.cards import ANYTIME, STATIC, About, Evaluation, ModelCard, PointResult, load_card, static_frontier
from dynviz.targets import TARGETS, CurveTarget, PointTarget, checked_report

ABOUT = About("t", "f", "s", (), "l", "d")


def card(name: str, points: dict[str, tuple[float, float]], kind: str = "budget", data: str = "d") -> ModelCard:
    """A card whose points are {name: (top-1, millions of FLOPs)}; the first is the default."""
    results = tuple(
        PointResult(n, {}, top1, top1, 1e6 * mflops, 1.0, kind=kind) for n, (top1, mflops) in points.items()
    )
    return ModelCard(name, ABOUT, 1e8, next(iter(points)), evaluation=Evaluation("eval", data, "test", 10, results))


TWIN = card("twin", {"static": (0.90, 100.0)}, kind=STATIC)


def test_a_point_target_is_met_by_any_point_accurate_enough_within_the_flops():
    target = PointTarget("dyn", 1, reference="twin", within_points=1, flops_share=0.6)
    met = target.report(card("dyn", {"θ = 0.5": (0.85, 50.0), "θ = 0.3": (0.895, 60.0)}), TWIN)
    assert met.met and met.how_far == "89.5% at 60.0 M, 0.60× (“θ = 0.3”)"


def test_a_missed_point_target_says_how_short_it_fell_and_where_the_accuracy_is_reached():
    target = PointTarget("dyn", 1, reference="twin", within_points=1, flops_share=0.6)
    missed = target.report(card("dyn", {"θ = 0.5": (0.85, 50.0), "θ = 0.1": (0.895, 80.0)}), TWIN)
    assert missed.met is False
    assert "needs 89.0%" in missed.how_far
    assert "best within 0.6×: 85.0%" in missed.how_far and "4.0 pt short" in missed.how_far
    assert "reached only at 89.5% at 80.0 M, 0.80×" in missed.how_far


def test_an_absolute_target_reads_only_the_points_it_names():
    points = {"anytime: exit 1": (0.80, 10.0), "anytime: exit 2": (0.88, 40.0)}
    first_exit = PointTarget("ee", 1, top1=0.85, among="anytime: exit 1")
    best_exit = PointTarget("ee", 1, top1=0.85, among=ANYTIME)
    early_exit = card("ee", points, kind=ANYTIME)
    assert first_exit.report(early_exit, None).met is False
    assert best_exit.report(early_exit, None).met is True


def test_a_reference_measured_on_other_images_is_not_compared():
    target = PointTarget("dyn", 1, reference="twin", within_points=1)
    other = target.report(card("dyn", {"θ = 0.5": (0.95, 50.0)}, data="other"), TWIN)
    assert other.met is None and "other images" in other.how_far


def test_the_static_frontier_leaves_out_a_network_a_cheaper_one_beats():
    points = card("s", {"resnet": (0.88, 69.0), "vit": (0.77, 58.0), "small": (0.82, 12.0), "big": (0.881, 125.0)})
    frontier = static_frontier(points.evaluation.points)
    assert [p.name for p in frontier] == ["small", "resnet", "big"]


def test_a_curve_target_compares_the_default_point_with_the_static_curve_at_its_flops():
    statics = [card("small", {"static": (0.80, 40.0)}, STATIC), card("big", {"static": (0.90, 80.0)}, STATIC)]
    target = CurveTarget("dyn", 1, ("small", "big"))
    # At 60 the static curve is at 85%: the default (84%) is under it, another point (87% at 70 against 87.5%)
    # too, and a point cheaper than every static network is left out rather than extrapolated.
    below = card("dyn", {"θ = 0.5": (0.84, 60.0), "θ = 0.3": (0.87, 70.0), "θ = 0.9": (0.70, 20.0)})
    result = target.report(below, statics)
    assert result.met is False
    assert result.how_far.startswith("−1.0 pt at the default point; −0.5 pt at best")
    assert "1 points outside its FLOPs not compared" in result.how_far
    above = card("dyn", {"θ = 0.5": (0.86, 60.0)})
    assert target.report(above, statics).met is True
    assert target.report(card("dyn", {"θ = 0.9": (0.70, 20.0)}), statics).met is None


def test_every_target_names_bundled_cards_and_each_has_a_row(capsys):
    for target in TARGETS:
        references = target.statics if isinstance(target, CurveTarget) else (target.reference,)
        for name in (target.model, *filter(None, references)):
            assert load_card(name) is not None, name
        result = checked_report(target).main
        assert result.met is not None or "no point within" in result.how_far
    assert main(["targets", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| model | target | issue | met? | how far | on other photos |"
    assert len(lines) == 2 + len(TARGETS)
    assert any(line.startswith("| lite_cascade | within 0.5 pt of lite2") and "| met |" in line for line in lines)


def test_a_target_is_checked_again_on_the_photos_of_a_check_that_the_model_and_its_reference_share():
    target = PointTarget("dyn", 1, reference="twin", within_points=1, flops_share=0.6)
    check = Evaluation("eval --check", "other", "test", 10, (PointResult("θ = 0.5", {}, 0.80, 0.80, 5e7, 1.0),))
    reference_check = Evaluation(
        "eval --check", "other", "test", 10, (PointResult("static", {}, 0.85, 0.85, 1e8, 1.0),)
    )
    model = card("dyn", {"θ = 0.5": (0.895, 50.0)}).with_check(check)
    twin = TWIN.with_check(reference_check)
    assert target.report(model, twin).met is True
    assert model.measured_on("elsewhere", "test") is None
    on_check = target.report(model.measured_on("other", "test"), twin.measured_on("other", "test"))
    assert on_check.met is False and "needs 84.0%" in on_check.how_far
