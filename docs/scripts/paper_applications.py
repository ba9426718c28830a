"""The sections of docs/results.md for the paper's applications (run by make_results.py, not alone).

Tuning ρ and λ against a grid search; removal curves; the detection protocols side by side; model
editing. Every prediction is checked by retraining with the recorded procedure (same θ_0, batches and
learning rates). Data: scikit-learn's digits (softmax regression and a small tanh MLP on 16 principal
components) when scikit-learn is installed, else the embedded synthetic set.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import refsam
from refsam import apps
from refsam.apps import plotting
from refsam.apps.demo import prepare_data
from refsam.data import sklearn_available
from refsam.models import build_model


def _f(x, spec):
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def _log(message):
    print(message, file=sys.stderr, flush=True)


def _data(model, flip, n, quick, val_fraction=0.4):
    """(train, val, test, true training labels, model name, description): digits (or synthetic) with
    ``flip`` of the training labels flipped; the held-out part split in half into validation and test.
    On synthetic data (2 classes) a softmax model becomes logistic regression."""
    digits = sklearn_available() and not quick
    source = ("digits", n, "softmax") if digits else ("synthetic", 80 if quick else n, "logistic")
    pca = 16 if digits else None
    train, held = prepare_data(*source, flip, val_fraction, 0, pca)
    true = prepare_data(*source, 0.0, val_fraction, 0, pca)[0].y  # the same split before flipping
    h = held.n // 2
    val, test = held.subset(np.arange(h)), held.subset(np.arange(h, held.n))
    if not digits and model == "softmax":
        model = "logistic"
    name = f"digits ({n} rows, 16 principal components)" if digits else f"synthetic ({source[1]} rows)"
    model_obj = build_model(model, train.p, train.n_classes, 8)
    return train, val, test, true, model, f"{name}, {model_obj!r}, {round(100 * flip)}% flipped labels"


def _fit(model, train, lam, quick):
    """SAM (ρ = 0.05) on ``refsam.SGD(0.5, weight_decay=lam)``, full batch, refined to its root."""
    problem = refsam.Problem(build_model(model, train.p, train.n_classes, 8), train.X, train.y)
    return apps.fit(problem, refsam.SAM(0.05), refsam.SGD(0.5, weight_decay=lam), 60 if quick else 300,
                    seed=0)


# -- tuning -------------------------------------------------------------------------------------------
def tuning_section(quick, out_dir):
    lines = ["## Hyper-parameter tuning", "",
             "`refsam tune` / `apps.tune`: L-BFGS-B in log space over ρ ∈ [1e-3, 0.2], λ ∈ [1e-4, 1] "
             "on the mean validation loss of θ_T(ρ, λ), with exact hypergradients (the closed form where the "
             "run has "
             "converged to its root, through the run elsewhere), against a 6 × 6 geometric grid search. "
             "*FD check*: the hypergradient at the tuned point against central differences of retraining. "
             "*within*: the tuned point lies within one grid step (in log ρ and log λ) of the grid's "
             "best.", "",
             "| setting | hypergradient | tuned ρ | tuned λ | tuned f | trainings | grid ρ | grid λ | grid f "
             "| grid trainings | within | FD check |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    bounds = ((1e-3, 0.2), (1e-4, 1.0))
    settings = [("full batch", None), ("minibatch 32", 32)]
    figure = None
    for label, batch in settings:
        train, val, _, _, model, description = _data("softmax", 0.1, 300, quick, val_fraction=0.5)
        problem = refsam.Problem(build_model(model, train.p, train.n_classes), train.X, train.y)
        optimizer = refsam.SGD(0.5, weight_decay=0.01)  # λ tuned: the optimizer's weight decay
        procedure = {"steps": 40 if quick else 300, "batch_size": batch}
        _log(f"  tuning ({label})")
        result = apps.tune(problem, val.X, val.y, optimizer, 0.05, 0.01, bounds=bounds,
                           max_trainings=8 if quick else 25, **procedure)
        grid = apps.grid_search(problem, val.X, val.y, optimizer, np.geomspace(*bounds[0], 3 if quick else 6),
                                np.geomspace(*bounds[1], 3 if quick else 6), **procedure)
        trial, _, err = apps.check_hypergradient(problem, val.X, val.y, optimizer, result.rho,
                                                 result.weight_decay, **procedure)
        g_rho, g_lam, g_loss = grid.best
        res_rho, res_lam = grid.resolution()
        within = (abs(np.log(result.rho / g_rho)) <= res_rho
                  and abs(np.log(result.weight_decay / g_lam)) <= res_lam)
        kinds = "/".join(sorted({t.method for t in result.trials}))
        dataset = description.split(" (")[0]
        lines.append(f"| {dataset}, {label} | {kinds} | {result.rho:.4g} | "
                     f"{result.weight_decay:.4g} | {result.loss:.5f} | {result.trainings} | {g_rho:.4g} | "
                     f"{g_lam:.4g} | {g_loss:.5f} | {grid.trainings} | {'yes' if within else 'no'} | "
                     f"{err:.1e} |")
        if figure is None and out_dir and plotting.matplotlib_available():
            figure = plotting.tuning_path(result, grid, out_dir, "results_tuning.png")[0]
    lines.append("")
    if figure:
        lines += [f"![tuning path on the grid]({os.path.basename(figure)})", "",
                  "The validation loss on the grid (full batch) with the tuner's trainings on it.", ""]
    return lines


# -- removal curves -------------------------------------------------------------------------------------
def removal_section(quick, out_dir):
    lines = ["## Removal curves", "",
             "For each ranking, the top k training points by I_j(f) (f = mean validation loss; largest = "
             "most harmful) are removed and the run is repeated with w_j = 0 (same θ_0, batches, η); test "
             "accuracy on a held-out test set against k. Baselines: *loss* (highest training loss first) and "
             "*random* "
             "(mean of 3 seeded orders). *trak*: `trak_influence` at θ̂ (k = d/2, Fisher); *kfac*: the "
             "closed form with K-FAC curvature (MLP). The last columns check the first-order prediction of "
             "the closed form by retraining: predicted and actual change of f at the largest k.", ""]
    figures = []
    ks_full = [0, 10, 20, 40, 60, 80]
    configs = [("softmax", 0.1), ("softmax", 0.3), ("mlp", 0.1), ("mlp", 0.3)]
    if quick:
        configs = [("softmax", 0.1)]
    all_curves = {}
    for model, flip in configs:
        train, val, test, _, model, description = _data(model, flip, 400, quick)
        lam = 0.1 if model == "mlp" else 0.01
        _log(f"  removal curves: {description}")
        start = time.perf_counter()
        fit = _fit(model, train, lam, quick)
        ks = [k for k in (ks_full if not quick else [0, 4, 8]) if k < fit.problem.n]
        methods = [m for m in ("closed_form", "closed_form_erm", "trajectory", "tracin")
                   if m in fit.available_methods()]
        extra = {"trak": refsam.trak_influence(fit.problem, fit.theta_hat, val.X, val.y,
                                               max(1, fit.problem.d // 2),
                                               optimizer=fit.optimizer).mean(axis=1)}
        if model == "mlp" and fit.fixed_point is not None and fit.fixed_point.converged:
            extra["kfac"] = refsam.hessian_influence(fit.problem, fit.sam, fit.theta_hat, val.X, val.y,
                                                     curvature="kfac", on_unverified="warn",
                                                     optimizer=fit.optimizer).mean(axis=1)
        curves = apps.removal_curves(fit, val.X, val.y, test.X, test.y, ks, methods, extra_scores=extra,
                                     n_random=3, flipped=train.flipped)
        all_curves[description] = curves
        lines += [f"### {description}", "",
                  f"n = {fit.problem.n} training, {val.n} validation, {test.n} test points, "
                  f"d = {fit.problem.d}; λ = {lam}; {_root_note(fit)}; "
                  f"{time.perf_counter() - start:.0f} s.", "",
                  "| ranking | " + " | ".join(f"k = {k}" for k in ks) + " | flipped in top "
                  f"{ks[-1]} | predicted Δf (k = {ks[-1]}) | actual Δf |",
                  "|---|" + "---|" * (len(ks) + 3)]
        for c in curves:
            lines.append(f"| {c.method} | " + " | ".join(f"{a:.3f}" for a in c.test_accuracy)
                         + f" | {_f(c.flipped_removed[-1], '.0f')} | "
                         f"{_f(c.predicted_val_change[-1], '+.4f')} | {c.val_loss_change[-1]:+.4f} |")
        lines.append("")
    if out_dir and plotting.matplotlib_available():
        figures.append(_removal_figure(all_curves, out_dir))
    for path in figures:
        lines += [f"![removal curves]({os.path.basename(path)})", "",
                  "Test accuracy after removing the top k of each ranking and retraining.", ""]
    return lines, all_curves


def _root_note(fit):
    if fit.fixed_point is None:
        return f"no SAM root ({fit.fixed_point_note}): trajectory methods only"
    fp = fit.fixed_point
    if not fp.converged:
        return (f"no verified root (best ‖G‖ = {fp.residual:.0e}): the closed-form rankings are the "
                f"approximation at that point")
    return (f"root ‖G‖ = {fp.residual:.0e}, spectral radius {fp.spectral_radius:.3f} "
            f"({'stable' if fp.stable else 'unstable: the run does not converge to it'})")


def _removal_figure(all_curves, out_dir):
    return plotting.removal_curves_grid(all_curves, out_dir, "results_removal.png")[0]


# -- detection protocols ---------------------------------------------------------------------------------
def protocols_section(quick):
    lines = ["## Detection protocols side by side", "",
             "Three ways to find flipped labels with the same influence method: *self* (−I_j(ℓ_j)), "
             "*validation* (I_j(f) on the clean validation set) and *relabel*: inspect the top q of a "
             "ranking, correct the flipped labels found there, retrain with the same procedure, and measure "
             "the fraction of flipped labels fixed, the test accuracy, and the accuracy recovered, (acc_q − "
             "acc_noisy) / (acc_clean − acc_noisy) (— where correcting every label gains fewer than 2 test "
             "points: the ratio would be noise).", ""]
    verdicts = []
    for model, flip in ([("softmax", 0.1), ("softmax", 0.3)] if not quick else [("softmax", 0.1)]):
        train, val, test, true, model, description = _data(model, flip, 400, quick)
        _log(f"  detection protocols: {description}")
        fit = _fit(model, train, 0.01, quick)
        methods = [m for m in ("closed_form", "trajectory", "tracin") if m in fit.available_methods()]
        results, accs = apps.detection_protocols(fit, train.flipped, true, val.X, val.y, test.X, test.y,
                                                 methods)
        qs = results[0].fractions
        lines += [f"### {description}", "",
                  f"Test accuracy {accs['noisy']:.3f} on the noisy labels, {accs['clean']:.3f} retrained on "
                  f"all labels corrected.", "",
                  "| ranking | AUROC | " + " | ".join(f"fixed @ {q:.0%}" for q in qs) + " | "
                  + " | ".join(f"accuracy @ {q:.0%}" for q in qs) + " | "
                  + " | ".join(f"recovered @ {q:.0%}" for q in qs) + " |",
                  "|---|---|" + "---|" * (3 * len(qs))]
        for r in results:
            lines.append(f"| {r.ranking} | {r.auroc:.3f} | " + " | ".join(f"{x:.2f}" for x in r.fixed) + " | "
                         + " | ".join(f"{x:.3f}" for x in r.test_accuracy) + " | "
                         + " | ".join(_f(float(x), ".2f") for x in r.recovered) + " |")
        best_auroc = max(results, key=lambda r: r.auroc)
        best_fix = max(results, key=lambda r: r.fixed[1])
        verdicts.append(f"* {description}: best AUROC {best_auroc.auroc:.3f} by {best_auroc.ranking}; most "
                        f"flipped labels fixed after inspecting {qs[1]:.0%}: {best_fix.fixed[1]:.2f} by "
                        f"{best_fix.ranking}.")
        lines.append("")
    return lines, verdicts


# -- model editing -----------------------------------------------------------------------------------------
def editing_section(quick):
    train, val, test, _, model, description = _data("softmax", 0.1, 400, quick)
    _log(f"  model editing: {description}")
    fit = _fit(model, train, 0.01, quick)
    X, y = np.vstack([val.X, test.X]), np.concatenate([val.y, test.y])
    wrong = np.nonzero(np.argmax(fit.problem.model.predict_proba(fit.theta_final, X), axis=1) != y)[0]
    lines = ["## Model editing", "",
             f"{description}. For each misclassified held-out point (up to {3 if quick else 10}): the "
             "fewest training points whose removal is predicted (closed form, margin of the true class over "
             "the predicted "
             "one) to flip the prediction to the true label, at most 10% of the training set; then the run "
             "is repeated without them. *collateral*: fraction of the other held-out predictions that "
             "changed. *fixed by retraining* asks whether the true label is now the prediction; with 10 "
             "classes a positive margin over the former prediction can still leave a third class on top.",
             "",
             "| point | removed | margin before | predicted margin | actual margin | fixed by retraining | "
             "collateral | accuracy before → after |", "|---|---|---|---|---|---|---|---|"]
    edits = []
    for i in wrong[:3 if quick else 10]:
        e = apps.edit_prediction(fit, X, y, int(i), method="closed_form" if fit.fixed_point else "trajectory")
        edits.append(e)
        lines.append(f"| {i} | {len(e.removed)} | {e.margin_before:+.3f} | {e.predicted_margin:+.3f} | "
                     f"{e.actual_margin:+.3f} | {'yes' if e.succeeded else 'no'} | "
                     f"{e.collateral_changed:.3f} | {e.accuracy_before:.3f} → {e.accuracy_after:.3f} |")
    predicted = [e for e in edits if e.predicted_margin > 0]
    verdict = (f"* Model editing: {sum(e.succeeded for e in predicted)}/{len(predicted)} edits predicted to "
               f"flip a prediction did so when retrained (and {sum(e.succeeded for e in edits)}/{len(edits)} "
               f"of all attempted); median collateral {np.median([e.collateral_changed for e in edits]):.3f}."
               if edits else "* Model editing: no misclassified held-out point.")
    return lines + [""], verdict


def paper_sections(quick, out_dir):
    """All four sections and their summary bullets."""
    tuning = tuning_section(quick, out_dir)
    removal, curves = removal_section(quick, out_dir)
    protocols, verdicts = protocols_section(quick)
    editing, edit_verdict = editing_section(quick)
    summary = []
    for description, cs in curves.items():
        at = {c.method: c.test_accuracy[-1] for c in cs}
        best = max(at, key=at.get)
        summary.append(f"* Removal ({description}): highest test accuracy after removing the most points "
                       f"{at[best]:.3f} ({best}); random {at['random']:.3f}, loss {at['loss']:.3f}.")
    return tuning + removal + protocols + editing, summary + verdicts + [edit_verdict]
