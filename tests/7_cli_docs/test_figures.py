"""Every figure refsam writes has a title, labelled axes and a legend naming what is drawn, checked on the
matplotlib Figure just before it is saved; rankings with identical curves share one legend entry (the
exact methods are not hidden under their copies); the removal bars name every ranking on its own row and
keep the random baseline visible; ``refsam remove --ks`` writes its curves. Skips without matplotlib."""

from types import SimpleNamespace

import numpy as np
import pytest

from refsam.apps import plotting
from refsam.apps.detection import DetectionResult
from refsam.apps.explain import Explanation
from refsam.apps.removal import RemovalCurve, RemovalResult

pytestmark = pytest.mark.skipif(not plotting.matplotlib_available(), reason="matplotlib not installed")


@pytest.fixture
def saved(monkeypatch):
    """The figures passed to plotting._save, by file name, inspected before they are written."""
    figures = {}
    original = plotting._save

    def spy(fig, out_dir, name, force=False):
        figures[name] = _describe(fig)
        return original(fig, out_dir, name, force)

    monkeypatch.setattr(plotting, "_save", spy)
    return figures


def _describe(fig):
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.axison]
    legends = [leg for ax in fig.axes if (leg := ax.get_legend()) is not None] + list(fig.legends)
    return SimpleNamespace(
        suptitle=fig._suptitle.get_text() if fig._suptitle is not None else "",
        titles=[ax.get_title() for ax in axes], xlabels=[ax.get_xlabel() for ax in axes],
        ylabels=[ax.get_ylabel() for ax in axes],
        legend=[t.get_text() for leg in legends for t in leg.get_texts()],
        yticks=[(t.get_position()[1], t.get_text()) for ax in axes for t in ax.get_yticklabels()
                if t.get_text()],
        xscale=[ax.get_xscale() for ax in axes], axes=axes)


def _assert_labelled(fig, min_legend=2):
    assert fig.axes, "no axes drawn"
    assert fig.suptitle or all(fig.titles), f"a panel without a title: {fig.titles}"
    assert all(fig.xlabels) and all(fig.ylabels), (fig.xlabels, fig.ylabels)
    assert len([t for t in fig.legend if t.strip()]) >= min_legend, fig.legend


RNG = np.random.default_rng(0)
N = 40
FLIPPED = np.zeros(N, dtype=bool)
FLIPPED[:4] = True
EXACT = FLIPPED + 0.1 * np.arange(N)[::-1] / N  # the same scores for the exact methods: one curve


def _detection():
    scores = {"closed_form": EXACT, "trajectory": EXACT.copy(), "first_order": RNG.normal(size=N) + FLIPPED,
              "tracin": RNG.normal(size=N) + FLIPPED, "loss": RNG.normal(size=N),
              "random": RNG.normal(size=N)}
    return [DetectionResult(m, s, {"auroc": 0.9}, 0.0) for m, s in scores.items()]


def test_detection_curves_merge_identical_rankings_and_label_everything(tmp_path, saved):
    paths = plotting.detection_curves(_detection(), FLIPPED, str(tmp_path))
    assert [p.endswith("detection_curves.png") for p in paths] == [True]
    fig = saved["detection_curves.png"]
    _assert_labelled(fig)
    entries = " ".join(fig.legend)
    assert "closed_form = trajectory" in entries  # one line for both, not one hiding the other
    for method in ("first_order", "tracin", "loss", "random", "chance"):
        assert method in entries
    assert len(fig.axes) == 2 and "Zoom" in fig.titles[1]


def test_removal_bars_one_row_per_ranking_and_the_random_baseline_visible(tmp_path, saved):
    removed = np.arange(5)
    results = [RemovalResult("closed_form", removed, -0.08, -0.081),
               RemovalResult("first_order", removed, -1.6, -0.081),
               *[RemovalResult("random", removed, float("nan"), c) for c in (1e-4, 2e-3, 4e-4)]]
    plotting.removal_bars(results, str(tmp_path))
    fig = saved["removal.png"]
    _assert_labelled(fig)
    rows = [text for _, text in fig.yticks]
    assert rows == ["closed_form", "first_order", "random (mean of 3)"]
    heights = [y for y, _ in fig.yticks]
    assert len(set(heights)) == len(heights)  # no two labels at one position
    ax = fig.axes[0]
    assert fig.xscale == ["symlog"]  # so a change of 1e-4 is drawn beside one of 1.6
    widths = sorted(abs(p.get_width()) for p in ax.patches)
    assert widths[0] > 0 and "random trials" in fig.legend


def test_explanation_has_axis_labels_and_a_class_legend(tmp_path, saved):
    X = RNG.normal(size=(N, 2))
    y = (X[:, 0] > 0).astype(int)
    expl = Explanation("closed_form", RNG.normal(size=N), np.array([0, 1]), np.array([2, 3]))
    plotting.explanation_2d(X, y, X[5], expl, str(tmp_path))
    fig = saved["explanation.png"]
    _assert_labelled(fig)
    entries = " ".join(fig.legend)
    for what in ("class 0", "class 1", "proponents", "opponents", "test point"):
        assert what in entries


def test_removal_curves_figure_labels_both_panels(tmp_path, saved):
    ks = np.array([0, 5, 10])
    acc = np.array([0.8, 0.85, 0.9])

    def curve(method, a, change):
        return RemovalCurve(method, ks, a, np.zeros(3), change, np.full(3, np.nan), np.zeros(3))

    curves = [curve("closed_form", acc, -np.arange(3.0)), curve("trajectory", acc, -np.arange(3.0)),
              curve("loss", acc - 0.05, -np.arange(3.0) / 2), curve("random", acc - 0.1, np.zeros(3))]
    plotting.removal_curves_figure(curves, str(tmp_path))
    fig = saved["removal_curves.png"]
    _assert_labelled(fig)
    assert len(fig.axes) == 2 and "closed_form = trajectory" in " ".join(fig.legend)


def test_loo_scatter_and_tuning_path_are_labelled(tmp_path, saved):
    agreement = SimpleNamespace(method="closed_form", actual_loo=RNG.normal(size=10),
                                predicted=RNG.normal(size=10), pearson=0.99)
    plotting.loo_scatter([agreement, agreement], str(tmp_path))
    _assert_labelled(saved["loo_scatter.png"])
    grid = SimpleNamespace(rhos=np.array([0.01, 0.1]), weight_decays=np.array([0.001, 0.01, 0.1]),
                           losses=RNG.uniform(size=(2, 3)), best=(0.1, 0.01, 0.2), trainings=6)
    trials = [SimpleNamespace(rho=0.05, weight_decay=0.01), SimpleNamespace(rho=0.08, weight_decay=0.02)]
    result = SimpleNamespace(trials=trials, trainings=2, rho=0.08, weight_decay=0.02)
    plotting.tuning_path(result, grid, str(tmp_path))
    _assert_labelled(saved["tuning.png"])


def test_remove_ks_draws_its_curves(tmp_path, capsys):
    from refsam.cli import main

    out = tmp_path / "figs"
    argv = ["remove", "--ks", "0,3", "--n", "60", "--steps", "60", "--quiet", "--out", str(out),
            "--methods", "closed_form", "--random-trials", "1"]
    assert main(argv) == 0
    assert (out / "removal_curves.png").stat().st_size > 0
    assert f"{out}/removal_curves.png" in capsys.readouterr().out


def test_removal_curves_grid_one_labelled_panel_per_setting_and_one_legend(tmp_path, saved):
    ks = np.array([0, 5])

    def curve(method, acc):
        return RemovalCurve(method, ks, np.array(acc), np.zeros(2), np.zeros(2), np.full(2, np.nan),
                            np.zeros(2))

    settings = {f"setting {i}, a long description of the data and the model that must wrap": [
        curve("closed_form", [0.8, 0.9]), curve("tracin", [0.8, 0.9]), curve("random", [0.8, 0.8])]
        for i in range(3)}
    plotting.removal_curves_grid(settings, str(tmp_path), "grid.png")
    fig = saved["grid.png"]
    _assert_labelled(fig)
    assert len(fig.axes) == 3 and all("\n" in title for title in fig.titles)  # long titles wrap
    assert fig.legend == ["closed_form", "tracin", "random"]  # one legend, each ranking once
