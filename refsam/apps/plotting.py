"""Figures for the applications (optional: needs matplotlib, imported lazily with the Agg backend).

Every function writes PNG files into ``out_dir`` (created if needed) and returns the list of paths it
wrote; without matplotlib they write nothing and return []. `matplotlib_available()` tells which.

Every figure has a title, labelled axes and a legend. Methods keep one style across figures: the
exact methods solid and thick (closed form black, trajectory gold), the closed-form ablations blue and
cyan, the first-order and TracIn approximations orange/red and purple/pink (at ŵ / at θ), the loss
baseline grey dash-dot and the random baseline light grey dotted. Rankings whose curves coincide (the
exact methods usually do) are drawn once, with every name in the legend entry, so no curve hides another.

Each file is written whole (a temporary file renamed onto its name) and marked as refsam's (PNG text
``Software: refsam``): an existing file of that name is replaced only if it carries the mark, never
through a symbolic link, unless ``force=True`` (``--force``); `check_figure_targets` checks that
before the work.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..data.archive import check_target, write_atomically

__all__ = ["FIGURE_NAMES", "check_figure_targets", "demo_figures", "detection_curves", "explanation_2d",
           "is_refsam_figure", "loo_scatter", "matplotlib_available", "removal_bars", "removal_curves_figure",
           "removal_curves_grid", "tuning_path"]

# The files each command writes into its figure directory (default names).
FIGURE_NAMES = {"demo": ("loo_scatter.png", "detection_curves.png"), "detect": ("detection_curves.png",),
                "remove": ("removal.png", "removal_curves.png"), "explain": ("explanation.png",),
                "tune": ("tuning.png",)}
_MARK = b"Software\x00refsam"  # the PNG tEXt chunk refsam's figures carry


def is_refsam_figure(path: str) -> bool:
    """True if ``path`` is a PNG that refsam wrote (its text chunk ``Software: refsam``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and _MARK in head


def check_figure_targets(out_dir: str, names: tuple[str, ...], force: bool = False) -> None:
    """Refuse, before the work, figure names in ``out_dir`` that are links or files refsam did not write."""
    if not os.path.isdir(out_dir):
        return  # created by the first figure: nothing there to destroy
    for name in names:
        check_target(os.path.join(out_dir, name), force, is_refsam_figure, "--out")

# (family prefix, colour, line style, marker); first match wins, so longer prefixes come first.
_STYLES = [
    ("closed_form_frozen", "tab:blue", "--", "s"),
    ("closed_form_erm", "tab:cyan", "--", "^"),
    ("closed_form", "black", "-", "o"),
    ("trajectory", "darkgoldenrod", "-", "s"),
    ("first_order_unperturbed", "tab:red", (0, (6, 2)), "<"),
    ("first_order", "tab:orange", "-.", "v"),
    ("tracin_unperturbed", "tab:pink", (0, (1, 1)), "d"),
    ("tracin", "tab:purple", ":", "D"),
    ("loss", "0.45", "-.", "x"),
    ("random", "0.7", ":", None),
]
_OTHER = [("tab:green", "--", "P"), ("tab:red", "-.", "*"), ("tab:brown", ":", "h"), ("tab:pink", "--", "X")]


def matplotlib_available() -> bool:
    """True if matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out_dir: str, name: str, force: bool = False) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = check_target(os.path.join(out_dir, name), force, is_refsam_figure, "--out")
    try:
        write_atomically(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight",
                                                      metadata={"Software": "refsam"}))
    finally:
        _pyplot().close(fig)
    return path


def _style(method: str, index: int) -> dict[str, Any]:
    """Line keywords of a ranking: its family's colour, line style and marker (module docstring)."""
    family = [(c, ls, m) for prefix, c, ls, m in _STYLES if method.startswith(prefix)]
    color, ls, marker = family[0] if family else _OTHER[index % len(_OTHER)]
    exact = method in ("closed_form", "trajectory", "trajectory_forward", "trajectory_autodiff")
    return {"color": color, "ls": ls, "marker": marker, "lw": 2.2 if exact else 1.4,
            "zorder": 4 if exact else 3, "ms": 5, "mfc": "none" if marker not in (None, "x") else color}


def _groups(methods: list[str], curves: list[Any]) -> list[tuple[list[str], Any]]:
    """Rankings with identical curves, merged (names in order of first appearance)."""
    groups: list[tuple[list[str], Any]] = []
    for method, curve in zip(methods, curves):
        for names, other in groups:
            if all(np.array_equal(a, b, equal_nan=True) for a, b in zip(curve, other)):
                names.append(method)
                break
        else:
            groups.append(([method], curve))
    return groups


def _label(names: list[str], suffix: str = "") -> str:
    """Every name of a group, joined by "=", three to a line."""
    lines = [" = ".join(names[i:i + 3]) for i in range(0, len(names), 3)]
    return " =\n".join(lines) + suffix


def loo_scatter(agreements: Any, out_dir: str, name: str = "loo_scatter.png",
                force: bool = False) -> list[str]:
    """Predicted (−I_j(f)) against actual leave-one-out change of f, one panel per method."""
    if not matplotlib_available() or not agreements:
        return []
    plt = _pyplot()
    cols = min(3, len(agreements))
    rows = -(-len(agreements) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for i, (ax, a) in enumerate(zip(axes.ravel(), agreements)):
        lo = min(a.actual_loo.min(), a.predicted.min())
        hi = max(a.actual_loo.max(), a.predicted.max())
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--", label="predicted = actual")
        style = _style(a.method, i)
        ax.scatter(a.actual_loo, a.predicted, s=14, color=style["color"], label="training points")
        ax.set_title(f"{a.method}  (Pearson {a.pearson:.3f})", fontsize=9)
        ax.set_xlabel("actual change (retraining)", fontsize=8)
        ax.set_ylabel("predicted −I_j(f)", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    for ax in axes.ravel()[len(agreements):]:
        ax.axis("off")
    fig.suptitle("Leave-one-out: predicted vs actual change of the validation loss f", fontsize=10)
    fig.tight_layout()
    return [_save(fig, out_dir, name, force)]


def detection_curves(detection: Any, flipped: Any, out_dir: str,
                     name: str = "detection_curves.png", force: bool = False) -> list[str]:
    """Fraction of flipped labels found against fraction of the training set inspected, per ranking.

    Rankings with the same curve share one line (legend: their names joined by "="); the diagonal is
    what a random inspection order finds on average."""
    if not matplotlib_available() or not detection:
        return []
    from .detection import detection_curve

    plt = _pyplot()
    flipped = np.asarray(flipped, dtype=bool)
    curves = [detection_curve(d.scores, flipped) for d in detection]
    aurocs = {d.method: d.metrics["auroc"] for d in detection}
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1, 1]})
    groups = _groups([d.method for d in detection], curves)
    head = min(1.0, 3 * flipped.mean()) if flipped.any() else 1.0  # where the rankings differ
    for panel, right in ((ax, 1.0), (zoom, head)):
        panel.plot([0, 1], [0, 1], color="0.85", lw=1, zorder=1, label="chance (diagonal)")
        for i, (names, (x, y)) in enumerate(groups):
            shown = x <= right + 1e-12
            panel.plot(x[shown], y[shown], markevery=max(1, int(shown.sum()) // 10), drawstyle="steps-post",
                       label=_label(names, f"  (AUROC {aurocs[names[0]]:.3f})"), **_style(names[0], i))
        panel.set_xlim(0, right)
        panel.set_ylim(0, 1.02)
        panel.set_xlabel("fraction of training data inspected (highest score first)")
        panel.set_ylabel("fraction of flipped labels found")
        panel.grid(alpha=0.25)
    ax.set_title("All of the training set")
    zoom.set_title(f"Zoom: the first {head:.0%} inspected")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7.5, frameon=False,
               title="ranking (identical curves share one line and one entry)", title_fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Mislabeled-data detection: {int(flipped.sum())} flipped labels among {flipped.size} "
                 f"training points", fontsize=11)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * (-(-len(labels) // 3)), 1, 1))
    return [_save(fig, out_dir, name, force)]


def removal_bars(results: Any, out_dir: str, name: str = "removal.png",
                 force: bool = False) -> list[str]:
    """Predicted and actual change of the validation loss after removing k points, per method.

    Horizontal bars (one row per method, so no label collides), on a symmetric-log axis so the random
    baseline's small changes stay visible beside the first-order methods' large predictions; the random
    row is the mean of its trials, with each trial drawn as a dot. Every bar carries its value."""
    if not matplotlib_available() or not results:
        return []
    plt = _pyplot()
    ranked = [r for r in results if r.method != "random"]
    random = [r.actual_change for r in results if r.method == "random"]
    labels = [r.method for r in ranked] + ([f"random (mean of {len(random)})"] if random else [])
    actual = np.array([r.actual_change for r in ranked] + ([float(np.mean(random))] if random else []))
    predicted = np.array([r.predicted_change for r in ranked] + ([np.nan] if random else []))
    values = np.concatenate([actual, predicted[np.isfinite(predicted)], random])
    nonzero = np.abs(values[values != 0])
    linthresh = 10.0 ** np.floor(np.log10(nonzero.min())) if nonzero.size else 1e-3
    y = np.arange(len(labels))[::-1]  # the first method on top
    fig, ax = plt.subplots(figsize=(7.2, 0.45 * len(labels) + 1.6))
    ax.barh(y + 0.2, actual, 0.4, color="tab:blue", label="actual (retrained)")
    has = np.isfinite(predicted)  # the random row has no prediction: no bar, a note
    ax.barh(y[has] - 0.2, predicted[has], 0.4, color="tab:orange", label="predicted −Σ I_j(f)")
    if random:
        ax.scatter(random, np.full(len(random), y[-1] + 0.2), color="black", s=12, zorder=5,
                   label="random trials")
    ends = list(actual)
    if random:  # the random row's label goes beyond its farthest trial
        ends[-1] = max(random) if actual[-1] >= 0 else min(random)
    for yi, a, end, p in zip(y, actual, ends, predicted):
        ax.annotate(f"{a:+.3g}", (end, yi + 0.2), xytext=(4 if a >= 0 else -4, 0), textcoords="offset points",
                    ha="left" if a >= 0 else "right", va="center", fontsize=6.5)
        text = "no prediction" if np.isnan(p) else f"{p:+.3g}"
        p0 = 0.0 if np.isnan(p) else p
        ax.annotate(text, (p0, yi - 0.2), xytext=(3 if p0 >= 0 else -3, 0), textcoords="offset points",
                    ha="left" if p0 >= 0 else "right", va="center", fontsize=6.5, color="0.3")
    ax.set_xscale("symlog", linthresh=linthresh)
    lo, hi = min(values.min(), 0.0), max(values.max(), 0.0)
    ax.set_xlim(lo * 4 if lo < 0 else -linthresh, hi * 4 if hi > 0 else linthresh)
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"change of the validation loss f (symmetric log scale, linear within ±{linthresh:.0e})")
    ax.set_ylabel("ranking")
    k = len(results[0].removed)
    ax.set_title(f"Removing the top k = {k} points of each ranking, then retraining")
    ax.legend(fontsize=7, loc="best")
    return [_save(fig, out_dir, name, force)]


def removal_curves_figure(curves: Any, out_dir: str, name: str = "removal_curves.png",
                          force: bool = False) -> list[str]:
    """Test accuracy (left) and the actual change of the validation loss f (right) after removing the
    top k points of each ranking and retraining, against k (`refsam.apps.removal.removal_curves`)."""
    if not matplotlib_available() or not curves:
        return []
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = [c.method for c in curves]
    accuracy = _groups(methods, [(c.ks, c.test_accuracy) for c in curves])
    change = _groups(methods, [(c.ks, c.val_loss_change) for c in curves])
    for ax, groups in ((left, accuracy), (right, change)):
        for i, (names, (ks, values)) in enumerate(groups):
            ax.plot(ks, values, label=_label(names), **_style(names[0], i))
        ax.set_xlabel("k, training points removed (top k of the ranking)")
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    left.set_ylabel("test accuracy after retraining")
    left.set_title("Test accuracy")
    right.axhline(0, color="0.3", lw=0.8)
    right.set_ylabel("actual change of the validation loss f")
    right.set_title("Validation loss")
    fig.suptitle("Removal curves: remove the top k of each ranking, retrain, measure", fontsize=11)
    fig.tight_layout()
    return [_save(fig, out_dir, name, force)]


def removal_curves_grid(settings: dict[str, Any], out_dir: str, name: str = "removal_curves_grid.png",
                        columns: int = 2, force: bool = False) -> list[str]:
    """Test accuracy against k for several settings (title → their `removal_curves` results), one panel
    each, with one legend for all. The exact methods are drawn thick and underneath, the other rankings
    thin with markers on top, so curves that coincide with the exact ones stay visible."""
    if not matplotlib_available() or not settings:
        return []
    import textwrap

    plt = _pyplot()
    cols = min(columns, len(settings))
    rows = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.9 * rows), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, (title, curves) in zip(axes.ravel(), settings.items()):
        for i, c in enumerate(curves):
            style = _style(c.method, i)
            if style["lw"] > 2:  # exact: thick, translucent, underneath
                style.update(lw=4.0, alpha=0.45, zorder=2, marker=None)
            (line,) = ax.plot(c.ks, c.test_accuracy, label=c.method, **style)
            handles.setdefault(c.method, line)
        ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=8)
        ax.set_xlabel("k, training points removed (top k of the ranking)", fontsize=8)
        ax.set_ylabel("test accuracy after retraining", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    for ax in axes.ravel()[len(settings):]:
        ax.axis("off")
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(5, len(handles)),
               fontsize=8, frameon=False, title="ranking (exact methods: thick, underneath)",
               title_fontsize=8)
    fig.suptitle("Removal curves: remove the top k of each ranking, retrain, measure test accuracy",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * (-(-len(handles) // 5)), 1, 1))
    return [_save(fig, out_dir, name, force)]


def explanation_2d(X: Any, y: Any, x_test: Any, explanation: Any, out_dir: str,
                   name: str = "explanation.png", force: bool = False) -> list[str]:
    """Training points of 2-D data by class, with the proponents and opponents of one test point marked."""
    X = np.asarray(X)
    if not matplotlib_available() or X.ndim != 2 or X.shape[1] != 2:
        return []
    plt = _pyplot()
    y = np.asarray(y)
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    colors = plt.get_cmap("coolwarm")(np.linspace(0, 1, max(2, np.unique(y).size)))
    for color, label in zip(colors, np.unique(y)):
        ax.scatter(X[y == label, 0], X[y == label, 1], color=color, s=12, alpha=0.55,
                   label=f"training, class {label}")
    p, o = explanation.proponents, explanation.opponents
    ax.scatter(X[p, 0], X[p, 1], s=110, facecolors="none", edgecolors="green", lw=1.8,
               label=f"proponents ({len(p)}: removing one raises the test loss)")
    ax.scatter(X[o, 0], X[o, 1], s=110, facecolors="none", edgecolors="black", marker="s", lw=1.5,
               label=f"opponents ({len(o)}: removing one lowers it)")
    ax.scatter([x_test[0]], [x_test[1]], marker="*", s=260, c="gold", edgecolors="black", zorder=5,
               label="test point")
    ax.set_xlabel("feature 1")
    ax.set_ylabel("feature 2")
    ax.set_title(f"Proponents and opponents of one prediction ({explanation.method})")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    return [_save(fig, out_dir, name, force)]


def tuning_path(result: Any, grid: Any, out_dir: str, name: str = "tuning.png",
                force: bool = False) -> list[str]:
    """The grid's validation loss over (log ρ, log λ) with the tuner's trainings on it."""
    if not matplotlib_available():
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))

    def edges(axis: Any) -> Any:  # cell edges halfway between grid points in log space
        logs = np.log(axis)
        step = np.diff(logs).mean() if logs.size > 1 else 1.0
        middle = (logs[:-1] + logs[1:]) / 2
        return np.exp(np.concatenate([[logs[0] - step / 2], middle, [logs[-1] + step / 2]]))

    mesh = ax.pcolormesh(edges(grid.weight_decays), edges(grid.rhos), grid.losses, shading="flat",
                         cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="validation loss f")
    path = np.array([(t.weight_decay, t.rho) for t in result.trials])
    ax.plot(path[:, 0], path[:, 1], "w.-", lw=0.8, label=f"tuner ({result.trainings} trainings)")
    ax.plot([result.weight_decay], [result.rho], "r*", ms=12, label="tuned")
    g_rho, g_lam, _ = grid.best
    ax.plot([g_lam], [g_rho], "ws", mfc="none", ms=10, label=f"grid best ({grid.trainings} trainings)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("weight decay λ")
    ax.set_ylabel("ρ")
    ax.set_title("Tuning ρ and λ: the grid's validation loss and the tuner's path")
    ax.legend(fontsize=7)
    return [_save(fig, out_dir, name, force)]


def demo_figures(result: Any, out_dir: str, force: bool = False) -> list[str]:
    """The demo's figures: leave-one-out scatter and detection curves. Returns the paths written."""
    return (loo_scatter(result.agreements, out_dir, force=force)
            + detection_curves(result.detection, result.flipped, out_dir, force=force))
