"""Figures for the applications (optional: needs matplotlib, imported lazily with the Agg backend).

Every function writes PNG files into ``out_dir`` (created if needed) and returns the list of paths it
wrote; without matplotlib they write nothing and return []. `matplotlib_available()` tells which.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["demo_figures", "detection_curves", "explanation_2d", "loo_scatter", "matplotlib_available",
           "removal_bars", "tuning_path"]

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


def _save(fig: Any, out_dir: str, name: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def loo_scatter(agreements: Any, out_dir: str, name: str = "loo_scatter.png") -> list[str]:
    """Predicted (−I_j(f)) against actual leave-one-out change of f, one panel per method."""
    if not matplotlib_available() or not agreements:
        return []
    plt = _pyplot()
    cols = min(3, len(agreements))
    rows = -(-len(agreements) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax, a in zip(axes.ravel(), agreements):
        lo = min(a.actual_loo.min(), a.predicted.min())
        hi = max(a.actual_loo.max(), a.predicted.max())
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--")
        ax.scatter(a.actual_loo, a.predicted, s=14)
        ax.set_title(f"{a.method}  (Pearson {a.pearson:.3f})", fontsize=9)
        ax.set_xlabel("actual change (retraining)", fontsize=8)
        ax.set_ylabel("predicted −I_j(f)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(agreements):]:
        ax.axis("off")
    fig.suptitle("Leave-one-out: predicted vs actual change of the validation loss", fontsize=10)
    fig.tight_layout()
    return [_save(fig, out_dir, name)]


def detection_curves(detection: Any, flipped: Any, out_dir: str,
                     name: str = "detection_curves.png") -> list[str]:
    """Fraction of flipped labels found against fraction of the training set inspected, per method."""
    if not matplotlib_available() or not detection:
        return []
    from .detection import detection_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for d in detection:
        x, y = detection_curve(d.scores, flipped)
        style = ":" if d.method in ("loss", "random") else "-"
        ax.plot(x, y, style, label=f"{d.method} (AUROC {d.metrics['auroc']:.3f})")
    ax.set_xlabel("fraction of training data inspected (highest score first)")
    ax.set_ylabel("fraction of flipped labels found")
    ax.set_title("Mislabeled-data detection by self-influence")
    ax.legend(fontsize=7)
    return [_save(fig, out_dir, name)]


def removal_bars(results: Any, out_dir: str, name: str = "removal.png") -> list[str]:
    """Predicted and actual change of the validation loss after removing k points, per method."""
    if not matplotlib_available() or not results:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels = [r.method for r in results]
    x = np.arange(len(results))
    ax.bar(x - 0.2, [r.actual_change for r in results], 0.4, label="actual (retrained)")
    ax.bar(x + 0.2, [0.0 if np.isnan(r.predicted_change) else r.predicted_change for r in results], 0.4,
           label="predicted −Σ I_j(f)")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(x, labels, rotation=30, fontsize=8)
    ax.set_ylabel("change of validation loss")
    ax.legend(fontsize=8)
    return [_save(fig, out_dir, name)]


def explanation_2d(X: Any, y: Any, x_test: Any, explanation: Any, out_dir: str,
                   name: str = "explanation.png") -> list[str]:
    """Training points of 2-D data, with the proponents and opponents of one test point marked."""
    if not matplotlib_available() or X.shape[1] != 2:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="coolwarm", s=12, alpha=0.5)
    p, o = explanation.proponents, explanation.opponents
    ax.scatter(X[p, 0], X[p, 1], s=90, facecolors="none", edgecolors="green", lw=1.5, label="proponents")
    ax.scatter(X[o, 0], X[o, 1], s=90, facecolors="none", edgecolors="black", marker="s", lw=1.5,
               label="opponents")
    ax.scatter([x_test[0]], [x_test[1]], marker="*", s=250, c="gold", edgecolors="black", label="test point")
    ax.set_title(f"Proponents and opponents ({explanation.method})")
    ax.legend(fontsize=8)
    return [_save(fig, out_dir, name)]


def tuning_path(result: Any, grid: Any, out_dir: str, name: str = "tuning.png") -> list[str]:
    """The grid's validation loss over (log ρ, log λ) with the tuner's trainings on it."""
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
    ax.legend(fontsize=7)
    return [_save(fig, out_dir, name)]


def demo_figures(result: Any, out_dir: str) -> list[str]:
    """The demo's figures: leave-one-out scatter and detection curves. Returns the paths written."""
    return (loo_scatter(result.agreements, out_dir)
            + detection_curves(result.detection, result.flipped, out_dir))
