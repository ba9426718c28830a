"""Regenerate docs/approximations.md and its figure: every scalable estimator beside the exact influence.

    python docs/scripts/make_approximations.py            # the full page (a few minutes on 2 cores)
    python docs/scripts/make_approximations.py --quick    # tiny sizes, a smoke test (writes to --out)
    python docs/scripts/make_approximations.py --out DIR  # write approximations.md (+ .png) to DIR

Datasets: the embedded synthetic set (logistic regression, and a small tanh MLP), and scikit-learn's
bundled breast cancer (logistic) and digits (softmax on 16 principal components) when scikit-learn is
installed. The figure needs matplotlib (`pip install -e ".[examples]"`); without it the page says so.
For each dataset, rule (SAM, ASAM) and ρ ∈ {0, 0.05, 0.2}: SAM trains full batch, θ_T is polished to
the root, and every estimator of I_j(f), f = the mean validation loss, is compared with the exact
influence of the same object — the closed form at the root for the closed-form estimators, the exact
adjoint of the recorded run for the trajectory estimators — and with leave-one-out re-solves.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from functools import partial

import numpy as np
from scipy.stats import pearsonr, spearmanr

import refsam
from refsam.apps.demo import prepare_data
from refsam.data import sklearn_available
from refsam.influence.solvers import SolverConvergenceWarning
from refsam.tolerances import rel_err
from refsam.validation import check_output_directory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(ROOT, "docs")

# name -> (loader kwargs, model factory, λ (the optimizer's weight decay), description)
DATASETS = {
    "synthetic": ({"source": "synthetic", "n": 250}, lambda p, k: refsam.LogisticRegression(), 0.01,
                  "seeded Gaussian clusters, 5 features, logistic regression"),
    "synthetic_mlp": ({"source": "synthetic", "n": 250}, lambda p, k: refsam.MLP((p, 8, k)), 0.05,
                      "the same data, a tanh MLP (5, 8, 2)"),
    "breast_cancer": ({"source": "breast_cancer"}, lambda p, k: refsam.LogisticRegression(), 0.01,
                      "scikit-learn breast cancer (569 × 30, standardised), logistic regression"),
    "digits": ({"source": "digits", "n": 500}, lambda p, k: refsam.SoftmaxRegression(k), 0.01,
               "scikit-learn digits (500 rows, 16 principal components), softmax regression"),
    "digits_mlp": ({"source": "digits", "n": 500}, lambda p, k: refsam.MLP((p, 8, k)), 0.1,
                   "the same digits, a tanh MLP (16, 8, 10)"),
}
SETTINGS = [("sam", 0.0), ("sam", 0.05), ("asam", 0.05), ("sam", 0.2), ("asam", 0.2)]
LOO_POINTS = 20  # leave-one-out re-solves per setting
F_POINTS = 20  # f = the mean loss of this many validation points (each is one column of every solve)
TOP = 0.1  # top-k overlap on the 10% most influential points (by |I_j|)


def measure(I, exact, loo_rows, loo):
    """(relative error, Spearman, top-10% overlap, leave-one-out Pearson) of scores I (n,) vs exact (n,)."""
    k = max(1, int(round(TOP * len(exact))))
    top = len(set(np.argsort(-np.abs(I))[:k]) & set(np.argsort(-np.abs(exact))[:k])) / k
    spearman = float(spearmanr(I, exact)[0]) if np.ptp(I) > 0 else float("nan")
    usable = loo is not None and np.ptp(I[loo_rows]) > 0
    pearson = float(pearsonr(-I[loo_rows], loo)[0]) if usable else float("nan")
    return rel_err(I, exact), spearman, top, pearson


def closed_form_estimators(problem, sam, optimizer, theta, Xv, yv, quick):
    """(family, estimator, budget, call) for every closed-form estimator and budget; ``optimizer``'s
    weight decay is part of G."""
    d = problem.d
    J = refsam.residual_jacobian(problem, sam, theta, optimizer=optimizer)
    hf = partial(hessian_influence, problem, sam, optimizer, theta, Xv, yv)
    mu = np.linalg.eigvals(J)
    scale = 1.1 * float(np.max(np.abs(mu)))
    damping = 0.0 if np.all(mu.real > 0) else 0.01  # LiSSA needs damping for eigenvalues with Re μ ≤ 0
    budgets = [b for b in (1, 4, 16, 64, 256) if b < 4 * d] if not quick else [2, 8]
    out = [("ablation", "closed_form_frozen (ε frozen)", "—",
            lambda: hf("frozen")),
           ("ablation", "closed_form_erm (SAM ignored)", "—",
            lambda: hf("erm"))]
    for k in budgets:
        out.append(("solver", "gmres", f"{k} iterations",
                    lambda k=k: hf(solver="gmres", maxiter=1, restart=k, rtol=1e-14)))
    for depth in ([10, 100, 1000] if not quick else [10, 100]):
        out.append(("solver", "lissa", f"depth={depth}",
                    lambda depth=depth: hf(solver="lissa", depth=depth, scale=scale, damping=damping)))
    for rank in sorted({max(1, d // 16), max(1, d // 4), max(1, d // 2), d}):
        out.append(("solver", "arnoldi", f"rank={rank}",
                    lambda rank=rank: hf(solver="arnoldi", rank=rank)))
    if isinstance(problem.model, refsam.MLP):
        for curvature in ("gauss_newton", "kfac", "ekfac"):
            for variant in ("full", "frozen"):
                out.append(("curvature", f"{curvature} ({variant})", "—",
                            lambda c=curvature, v=variant: hf(v, curvature=c)))
    for k in sorted({max(1, d // 8), max(1, d // 2), d}):
        out.append(("projection", "trak (fisher)", f"k={k}",
                    lambda k=k: (refsam.trak_influence(problem, theta, Xv, yv, k, optimizer=optimizer),
                                 None)))
    return out


def hessian_influence(problem, sam, optimizer, theta, Xv, yv, variant="full", **kwargs):
    """(influence, solve info) of the closed form at the root ``theta`` of ``optimizer``'s G."""
    return refsam.hessian_influence(problem, sam, theta, Xv, yv, variant, return_info=True,
                                    optimizer=optimizer, **kwargs)


def trajectory_estimators(problem, traj, Xv, yv, quick):
    T = traj.steps
    def run(method, **kwargs):
        return lambda: refsam.trajectory_influence(problem, traj, Xv, yv, method, **kwargs)

    out = [("trajectory", "first_order", "—", run("first_order")),
           ("trajectory", "tracin", "every step", run("tracin"))]
    for k in ([1, 5, 20] if not quick else [1, 5]):
        out.append(("trajectory", "tracin", f"checkpoints={k}",
                    lambda k=k: refsam.trajectory_influence(problem, traj, Xv, yv, "tracin", checkpoints=k)))
    for K in ([1, 10, 50, T // 2] if not quick else [1, 10]):
        out.append(("trajectory", "adjoint (truncated)", f"last_steps={K}",
                    lambda K=K: refsam.trajectory_influence(problem, traj, Xv, yv, last_steps=K)))
    return out


def run_setting(name, problem, optimizer, Xv, yv, rule, rho, steps, quick):
    sam = refsam.SAM(rho, rule)
    t0 = time.perf_counter()
    traj = refsam.train(problem, sam, optimizer, steps, seed=0)
    rows, notes = [], []
    try:
        fp = refsam.solve_fixed_point(problem, sam, traj.theta_final, optimizer=optimizer, progress=False)
    except refsam.FixedPointError as error:
        fp = None
        best = f"best ‖G‖ = {error.residual:.1e}" if getattr(error, "residual", None) is not None else ""
        notes.append(f"no verified root from θ_T ({type(error).__name__}{': ' + best if best else ''}); "
                     f"closed-form estimators skipped, trajectory estimators measured against the run")
    loo_rows = np.linspace(0, problem.n - 1, LOO_POINTS if not quick else 5).astype(int)
    if fp is not None:
        start = time.perf_counter()
        exact, info = hessian_influence(problem, sam, optimizer, fp.theta, Xv, yv)
        exact_cost, exact_seconds = info.products, time.perf_counter() - start
        exact = exact.mean(axis=1)
        try:
            loo = refsam.leave_one_out(problem, sam, fp, Xv, yv, loo_rows).mean(axis=1)
        except refsam.FixedPointError:
            loo = None
            notes.append("a leave-one-out re-solve found no root: no LOO Pearson for the closed-form rows")
        rows.append(("exact", "closed_form (direct LU)", "—", exact_cost, exact_seconds,
                     *measure(exact, exact, loo_rows, loo)))
        estimators = closed_form_estimators(problem, sam, optimizer, fp.theta, Xv, yv, quick)
        for family, estimator, budget, call in estimators:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SolverConvergenceWarning)  # the budget is the point
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    I, info = call()
                except (refsam.RefsamError, FloatingPointError) as error:
                    notes.append(f"{estimator} {budget}: {type(error).__name__}")
                    continue
            seconds = time.perf_counter() - start
            products = "—" if info is None else info.products
            rows.append((family, estimator, budget, products, seconds,
                         *measure(I.mean(axis=1), exact, loo_rows, loo)))
    start = time.perf_counter()
    exact_run = refsam.trajectory_influence(problem, traj, Xv, yv).mean(axis=1)
    run_seconds = time.perf_counter() - start
    loo_run = refsam.leave_one_out_replay(problem, traj, Xv, yv, loo_rows).mean(axis=1)  # retrain the run
    rows.append(("exact", "trajectory (adjoint)", f"T={traj.steps}", "—", run_seconds,
                 *measure(exact_run, exact_run, loo_rows, loo_run)))
    for family, estimator, budget, call in trajectory_estimators(problem, traj, Xv, yv, quick):
        start = time.perf_counter()
        I = call().mean(axis=1)
        rows.append((family, estimator, budget, "—", time.perf_counter() - start,
                     *measure(I, exact_run, loo_rows, loo_run)))
    return rows, notes, time.perf_counter() - t0


def _f(x, spec):
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def figure(all_rows, out_dir):
    """Three panels at SAM, ρ = 0.05: the solvers' error against cost; the trajectory estimators' error
    against their budget; what dropping SAM's terms costs beside what approximating the curvature costs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colours = {}
    for (dataset, rule, rho), rows in all_rows.items():
        if (rule, rho) != ("sam", 0.05):
            continue
        colour = colours.setdefault(dataset, f"C{len(colours)}")
        for estimator, marker in (("gmres", "o"), ("lissa", "s"), ("arnoldi", "^")):
            pts = sorted((r[3], r[5]) for r in rows if r[1] == estimator and r[3] != "—")
            if pts:
                x, y = zip(*pts)
                axes[0].loglog(x, np.maximum(y, 1e-17), marker=marker, color=colour, alpha=0.8,
                               label=f"{dataset}: {estimator}")
        steps = next(int(r[2][2:]) for r in rows if r[1] == "trajectory (adjoint)")
        for estimator, prefix, marker in (("adjoint (truncated)", "last_steps=", "o"),
                                          ("tracin", "checkpoints=", "s")):
            pts = sorted((1.0 if r[2] == "every step" else int(r[2][len(prefix):]) / steps, r[5])
                         for r in rows if r[1] == estimator and (r[2].startswith(prefix)
                                                                 or r[2] == "every step"))
            if pts:
                x, y = zip(*pts)
                axes[1].loglog(x, np.maximum(y, 1e-17), marker=marker, color=colour, alpha=0.8,
                               label=f"{dataset}: {estimator}")
        kinds = [("closed_form_frozen", "ε frozen"), ("closed_form_erm", "SAM ignored"),
                 ("gauss_newton (full)", "Gauss–Newton"), ("kfac (full)", "K-FAC"),
                 ("ekfac (full)", "EK-FAC")]
        for position, (prefix, _) in enumerate(kinds):
            errs = [r[5] for r in rows if r[1].startswith(prefix)]
            if errs:
                axes[2].scatter(position, max(errs[0], 1e-17), color=colour, s=40,
                                label=dataset if position == 0 else None)
        axes[2].set_xticks(range(len(kinds)), [label for _, label in kinds], rotation=20)
    axes[0].set_xlabel("cost [curvature products]")
    axes[0].set_ylabel("relative error vs exact closed form")
    axes[0].set_title("solvers over their budget")
    axes[1].set_xlabel("budget as a fraction of the run (K/T, k/T)")
    axes[1].set_ylabel("relative error vs exact trajectory influence")
    axes[1].set_title("truncated adjoint (o) and TracIn checkpoints (s)")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("relative error vs exact closed form")
    axes[2].set_title("SAM's terms dropped vs curvature approximated")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("SAM, ρ = 0.05: every estimator against the exact influence of the same object")
    fig.tight_layout()
    path = os.path.join(out_dir, "approximations.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="directory for approximations.md and the figure")
    args = parser.parse_args(argv)
    check_output_directory("--out", args.out)  # before any work: a file, or no write permission, is refused
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    names = [n for n in DATASETS if n.startswith("synthetic") or sklearn_available()]
    if args.quick:
        names, settings = ["synthetic", "synthetic_mlp"], [("sam", 0.05)]
    else:
        settings = SETTINGS
    all_rows, notes, sections = {}, [], []
    for name in names:
        loader, make_model, lam, description = DATASETS[name]
        n_rows = 60 if args.quick else loader.get("n")
        digits = name.startswith("digits")
        train, val = prepare_data(loader["source"], n_rows, "softmax" if digits else "logistic",
                                  0.1, 0.2, 0, 16 if digits else None)  # the demo's data
        model = make_model(train.p, train.n_classes)
        problem = refsam.Problem(model, train.X, train.y)
        optimizer = refsam.SGD(0.5, weight_decay=lam)
        lines = [f"## {name}", "", f"{description}: n = {problem.n}, d = {problem.d}, "
                 f"f = the mean loss of {min(F_POINTS, val.n)} of the {val.n} validation points, 10% flipped "
                 f"labels, λ = {lam} (the optimizer's weight decay), η = 0.5.", ""]
        for rule, rho in settings:
            X_f, y_f = val.X[:F_POINTS], val.y[:F_POINTS]
            rows, setting_notes, seconds = run_setting(name, problem, optimizer, X_f, y_f, rule, rho,
                                                       60 if args.quick else 300, args.quick)
            all_rows[(name, rule, rho)] = rows
            print(f"{name}, {rule}, rho={rho}: {seconds:.1f} s", file=sys.stderr)  # progress
            lines += [f"### {name}: {rule.upper()}, ρ = {rho}", "",
                      f"{seconds:.1f} s. " + ("; ".join(setting_notes) + "." if setting_notes else ""), "",
                      "| family | estimator | budget | products | seconds | rel. error | Spearman | top-10% "
                      "| LOO Pearson |", "|---|---|---|---|---|---|---|---|---|"]
            for family, estimator, budget, products, secs, err, rs, top, pearson in rows:
                lines.append(f"| {family} | {estimator} | {budget} | {products} | {secs:.3f} | {err:.1e} | "
                             f"{_f(rs, '.4f')} | {top:.2f} | {_f(pearson, '.4f')} |")
            lines.append("")
            notes += [f"{name} {rule} ρ={rho}: {n}" for n in setting_notes]
        sections += lines
    figure_path = figure(all_rows, args.out)
    summary = summarise(all_rows)
    header = [
        "# Scalable approximations, measured against the exact influence",
        "",
        "Generated by `python docs/scripts/make_approximations.py` (needs scikit-learn for breast cancer and "
        "digits, matplotlib for the figure: `pip install -e \".[examples]\"`). Do not edit by hand.",
        "",
        f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with refsam "
        f"{refsam.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores; {time.perf_counter() - start:.0f} s in total"
        + (" (**--quick**: tiny sizes)" if args.quick else "") + ".",
        "",
        "Every estimator targets the same number as the exact methods ([the contract](contract.md)), "
        f"I_j(f) = ∂f/∂w_j with f the mean loss of {F_POINTS} validation points (one column of every "
        "solve each), and is measured against the exact influence of **the same object**: the closed "
        "form at the verified root (direct LU) for the closed-form estimators, the exact adjoint of the "
        "recorded run for the trajectory estimators. *rel. error* = max_j |I_j − I_j^exact| / max_j "
        "|I_j^exact|; *Spearman* and *top-10%* (overlap of the 10% largest |I_j|) against the exact scores; "
        "*LOO Pearson* = Pearson of −I_j with the actual change of f when j is removed and the root "
        f"re-solved ({LOO_POINTS} points per setting; replayed runs where there is no root). *products* = "
        "curvature products (Hessian-vector products for the exact curvature; a SAM Jᵀv costs two); the "
        "direct LU's count is the columns of the two Hessians it forms.",
        "",
        "What the estimators are: [closed-form influence](closed_form.md#scalable-solvers) (solvers, "
        "curvatures, TRAK) and [trajectory influence](trajectory.md#budgeted-approximations). The "
        "*ablation* rows show what ignoring SAM's terms costs with an exact solve; the *solver*, *curvature* "
        "and *projection* rows what the approximation costs with SAM's terms kept (TRAK drops them, like "
        "every published TRAK).",
        "",
        "## Summary (computed from the tables below)",
        "",
        *summary,
        "",
    ]
    if figure_path:
        header += ["![error against cost](approximations.png)", "",
                   "SAM, ρ = 0.05, one colour per dataset. Left: each solver's relative error against its "
                   "cost in curvature products. Middle: the truncated adjoint and TracIn with checkpoints "
                   "against the exact adjoint, over their budget as a fraction of the T steps. Right: the "
                   "ablations (SAM's terms dropped, exact curvature) beside the approximate curvatures "
                   "(SAM's terms kept; MLP only), each with an exact solve.", ""]
    else:
        header += ["*(figure not generated: matplotlib is not installed)*", ""]
    if not sklearn_available():
        header += ["*(breast cancer and digits skipped: scikit-learn is not installed)*", ""]
    path = os.path.join(args.out, "approximations.md")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_results import kept_section  # docs/scripts/make_variants.py's section, kept as it is

    kept = kept_section(path, "variants")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(header + sections).rstrip() + "\n" + ("\n" + kept if kept else ""))
    print(f"wrote {path}" + (f" and {figure_path}" if figure_path else ""), file=sys.stderr)
    return 0


def summarise(all_rows):
    """Bullet points computed from the rows (never written by hand)."""
    out = []

    def span(prefix, sam_only=False):
        errs = [r[5] for (_, _, rho), rows in all_rows.items() for r in rows
                if r[1].startswith(prefix) and (rho > 0 or not sam_only)]
        return (min(errs), max(errs)) if errs else None

    for label, prefix in [("ε frozen (closed_form_frozen)", "closed_form_frozen"),
                          ("SAM ignored (closed_form_erm)", "closed_form_erm")]:
        found = span(prefix, sam_only=True)
        if found:
            out.append(f"* What ignoring SAM's terms costs, {label}: relative error {found[0]:.1e} – "
                       f"{found[1]:.1e} over the settings with ρ > 0 (at ρ = 0 both are exact).")
    def full_width_trak(setting_rows):
        traks = [r for r in setting_rows if r[1].startswith("trak")]
        return [max(traks, key=lambda r: int(r[2].split("=")[1]))] if traks else []

    chosen = {
        "TRAK (fisher) at k = d": [r for rows in all_rows.values() for r in full_width_trak(rows)],
        "first-order": [r for rows in all_rows.values() for r in rows if r[1] == "first_order"],
        "TracIn (every step)": [r for rows in all_rows.values() for r in rows
                                if r[1] == "tracin" and r[2] == "every step"],
    }
    for label, rows in chosen.items():
        if rows:
            errs = [r[5] for r in rows]
            out.append(f"* {label}: relative error {min(errs):.1e} – {max(errs):.1e}, Spearman "
                       f"{np.nanmin([r[6] for r in rows]):.2f} – {np.nanmax([r[6] for r in rows]):.2f}.")
    for solver in ("gmres", "lissa", "arnoldi"):
        best = [min(r[5] for r in rows if r[1] == solver) for rows in all_rows.values()
                if any(r[1] == solver for r in rows)]
        if best:
            out.append(f"* {solver}, best budget per setting: relative error ≤ {max(best):.1e} everywhere "
                       f"(median {np.median(best):.1e}).")
    for curvature in ("gauss_newton", "kfac", "ekfac"):
        found = span(curvature)
        if found:
            out.append(f"* MLP, {curvature} curvature with an exact solve: relative error {found[0]:.1e} – "
                       f"{found[1]:.1e}.")
    return out


if __name__ == "__main__":
    sys.exit(main())
