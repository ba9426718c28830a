"""Regenerate docs/results.md: every influence method beside ground truth on three datasets.

    python docs/scripts/make_results.py            # the full tables (a few minutes on 2 cores)
    python docs/scripts/make_results.py --quick    # tiny sizes, a smoke test (writes to --out)
    python docs/scripts/make_results.py --out PATH

Datasets: the embedded synthetic set (always), scikit-learn's bundled breast-cancer and digits sets
(only when scikit-learn is installed: `pip install scikit-learn`; without it they are skipped and the
page says so). For each: 10% of the training labels are flipped, SAM trains full batch (the base
optimizer, refsam.SGD, with weight decay), θ_T is refined to the SAM root, and every method's I_j(f)
(f = mean validation loss) is compared with finite differences and leave-one-out retraining on a subset
of training points; then mislabeled-data detection by self-influence and a data-removal experiment. Then
the paper's applications (docs/scripts/paper_applications.py): hyper-parameter tuning against a grid
search, removal curves, the detection protocols side by side and model editing, each checked by
retraining; their figures are written next to the page when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np

import refsam
from refsam import apps
from refsam.apps.demo import DemoConfig, run_demo
from refsam.data import sklearn_available

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(ROOT, "docs", "results.md")

# name -> (DemoConfig overrides, description). Sizes keep the whole script to a few minutes on 2 cores.
DATASETS = {
    "synthetic": ({"dataset": "synthetic", "n": 250, "subset": 30},
                  "seeded Gaussian clusters, 5 features, logistic regression"),
    "breast_cancer": ({"dataset": "breast_cancer", "subset": 20},
                      "scikit-learn breast cancer (569 × 30, standardised), logistic regression"),
    "digits": ({"dataset": "digits", "n": 500, "pca": 16, "model": "softmax", "subset": 10},
               "scikit-learn digits (500 of 1797 rows, 64 pixels → 16 principal components), "
               "softmax regression (10 classes)"),
}
QUICK = {"n": 80, "steps": 60, "subset": 4}
REMOVAL_METHODS = ("closed_form", "closed_form_erm", "trajectory", "tracin")


def _f(x, spec):
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def section(name: str, description: str, result, removal, k: int) -> list:
    fit, c = result.fit, result.config
    fp = fit.fixed_point
    lines = [f"## {name}", "", f"{description}. {result.data_summary}.", "",
             f"Training: {fit.sam!r}, λ = {c.weight_decay} (the optimizer's weight decay), η = {c.lr}, "
             f"T = {c.steps} full-batch "
             f"steps ({fit.train_time:.2f} s with the root solve). Accuracy: "
             + ", ".join(f"{key} {value:.3f}" for key, value in result.accuracy.items()) + ".", ""]
    if fp is not None:
        end = result.diagnostics_end
        lines += [f"Fixed point: ‖G(θ_T)‖ = {end.residual:.1e} at the end of the run; refined root "
                  f"‖G(θ̂)‖ = {fp.residual:.1e} ({'verified' if fp.converged else 'NOT verified'}), "
                  f"‖θ_T − θ̂‖ = {np.linalg.norm(fit.theta_final - fp.theta):.1e}, spectral radius of "
                  f"I − η ∂G/∂θ = {fp.spectral_radius:.4f}, cond(∂G/∂θ) = {fp.condition_number:.1e}.", ""]
    else:
        lines += [f"No SAM root: {fit.fixed_point_note}.", ""]
    truth = result.truth
    lines += [f"Influence on f = mean validation loss, ground truth on {truth.subset.size} training points "
              f"(half of them flipped) in {truth.seconds:.1f} s. *err* = max relative error of I_j(f) "
              f"against central finite differences of the object the method differentiates (re-solved "
              f"root or replayed run); Pearson/Spearman compare −I_j(f) with the actual leave-one-out change "
              f"by retraining; detection ranks all training points by −I_j(ℓ_j); time covers both.", "",
              "| method | err (target) | Pearson | Spearman | top-5% | top-10% | top-20% | AUROC "
              "| time [s] |",
              "|---|---|---|---|---|---|---|---|---|"]
    det = {d.method: d for d in result.detection}
    for a in result.agreements:
        d = det[a.method]
        m = d.metrics
        target = "root" if a.method in apps.CLOSED_FORM_METHODS else "run"
        lines.append(f"| {a.method} | {a.max_rel_err:.1e} ({target}) | {_f(a.pearson, '.4f')} | "
                     f"{_f(a.spearman, '.4f')} | {m['top5%']:.3f} | {m['top10%']:.3f} | {m['top20%']:.3f} | "
                     f"{m['auroc']:.3f} | {a.seconds + d.seconds:.2f} |")
    for name_ in apps.BASELINES:
        m = det[name_].metrics
        lines.append(f"| {name_} (baseline) | — | — | — | {m['top5%']:.3f} | {m['top10%']:.3f} | "
                     f"{m['top20%']:.3f} | {m['auroc']:.3f} | {det[name_].seconds:.2f} |")
    f0 = apps.mean_loss(fit.problem, fit.theta_final, *removal[1])
    lines += ["", f"Removal: the k = {k} training points with the largest I_j(f) removed, the run repeated "
              f"(same θ_0, η, T; w_j = 0). f = {f0:.4f} before.", "",
              "| method | predicted Δf | actual Δf | flipped among removed |", "|---|---|---|---|"]
    for r in removal[0]:
        lines.append(f"| {r.method} | {_f(r.predicted_change, '+.5f')} | {r.actual_change:+.5f} | "
                     f"{int(result.flipped[r.removed].sum())}/{k} |")
    return lines + [""]


def summary(results: dict) -> list:
    """Statements computed from the tables below (so they stay true when the tables are regenerated)."""
    if not results:
        return []
    exact_err = {m: max((a.max_rel_err for r, _ in results.values() for a in r.agreements if a.method == m),
                        default=float("nan")) for m in ("closed_form", "trajectory")}
    approx = [a for r, _ in results.values() for a in r.agreements if a.method in
              ("first_order", "tracin", "first_order_unperturbed", "tracin_unperturbed")]
    ablation = [a for r, _ in results.values() for a in r.agreements
                if a.method in ("closed_form_frozen", "closed_form_erm")]
    lines = ["## Summary (computed from the tables below)", ""]
    lines.append(f"* Exact methods: the largest derivative error over all datasets is "
                 f"{exact_err['closed_form']:.1e} for closed_form (against re-solved roots) and "
                 f"{exact_err['trajectory']:.1e} for trajectory (against replayed runs).")
    if ablation:
        errs = [a.max_rel_err for a in ablation]
        pearsons = [a.pearson for a in ablation]
        lines.append(f"* The SAM ablations (closed_form_frozen, closed_form_erm) differ from the exact root "
                     f"derivative by "
                     f"{min(errs):.1e} to {max(errs):.1e} (relative); their leave-one-out Pearson is "
                     f"{min(pearsons):.4f}–{max(pearsons):.4f}.")
    if approx:
        errs = [a.max_rel_err for a in approx]
        pearsons = [a.pearson for a in approx]
        lines.append(f"* First-order and TracIn approximations: derivative errors {min(errs):.1e}–"
                     f"{max(errs):.1e} (they ignore the step Jacobians, so their scale is wrong), "
                     f"leave-one-out Pearson {min(pearsons):.4f}–{max(pearsons):.4f}.")
    for name, (result, _) in results.items():
        auroc = {d.method: d.metrics["auroc"] for d in result.detection}
        best = max(auroc, key=auroc.get)
        lines.append(f"* Detection on {name}: best AUROC {auroc[best]:.3f} ({best}); closed_form "
                     f"{_f(auroc.get('closed_form'), '.3f')}, "
                     f"trajectory {_f(auroc.get('trajectory'), '.3f')}, "
                     f"loss baseline {auroc['loss']:.3f}, random {auroc['random']:.3f}.")
    return lines + [""]


def kept_section(path: str, name: str) -> str:
    """The section between the ``<!-- name:begin -->`` and ``<!-- name:end -->`` markers of the page at
    ``path`` (written by another script: make_lds.py's "lds", make_variants.py's "variants"), or ""."""
    if not os.path.exists(path):
        return ""
    page = open(path, encoding="utf-8").read()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in page or end not in page:
        return ""
    return "\n" + begin + page.split(begin, 1)[1].split(end, 1)[0] + end + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated subset of {','.join(DATASETS)} (default all)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output markdown file (default docs/results.md)")
    args = parser.parse_args(argv)
    chosen = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(chosen) - set(DATASETS))
    if unknown or not chosen:
        parser.error(f"--datasets must be a subset of {','.join(DATASETS)}, got {args.datasets!r}")
    have_sklearn = sklearn_available()
    if not have_sklearn:
        print("scikit-learn is NOT installed: the breast_cancer and digits tables are skipped "
              "(pip install scikit-learn, then rerun)", file=sys.stderr)
    start = time.perf_counter()
    body, results = [], {}
    for name in chosen:
        overrides, description = DATASETS[name]
        if name != "synthetic" and not have_sklearn:
            body += [f"## {name}", "", "Skipped: scikit-learn is not installed.", ""]
            continue
        print(f"== {name}", file=sys.stderr, flush=True)
        config = DemoConfig(progress=True, **{**overrides, **(QUICK if args.quick else {})})
        result = run_demo(config)
        from refsam.apps.demo import prepare_data  # the same split the demo used, for the removal experiment

        _, val = prepare_data(config.dataset, config.n, config.model, config.flip_fraction,
                              config.val_fraction, config.seed, config.pca)
        k = max(1, round(0.05 * result.fit.problem.n))
        methods = [m for m in REMOVAL_METHODS if m in result.fit.available_methods()]
        print(f"  removal of k = {k} points by {len(methods)} methods", file=sys.stderr, flush=True)
        removal = apps.remove_harmful(result.fit, val.X, val.y, k, methods, n_random=3, seed=0)
        body += section(name, description, result, (removal, (val.X, val.y)), k)
        results[name] = (result, removal)
    print("== the paper's applications", file=sys.stderr, flush=True)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from paper_applications import paper_sections

    paper_body, paper_summary = paper_sections(args.quick, os.path.dirname(os.path.abspath(args.out)))
    elapsed = time.perf_counter() - start
    quick_note = " (QUICK MODE: tiny sizes, not the published tables)" if args.quick else ""
    header = [
        "# Results",
        "",
        "Measured tables, regenerated by one command: `python docs/scripts/make_results.py` "
        "(needs scikit-learn for breast cancer and digits). Do not edit by hand.",
        "",
        f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with refsam "
        f"{refsam.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores; {elapsed:.0f} s in total{quick_note}.",
        "Every setting is the `refsam demo` default (SAM rule, ρ = 0.05, "
        "`refsam.SGD(0.5, weight_decay=0.01)`, i.e. η = 0.5 and λ = 0.01, T = 300 full-batch steps, 10% "
        "flipped labels, 20% validation split, seed 0) unless stated.",
        "How to read the columns: [tutorial](tutorial.md); when each method is exact: "
        "[validity](validity.md).",
        "",
    ]
    # the sections of docs/scripts/make_variants.py and make_lds.py, regenerated by those scripts
    kept = kept_section(args.out, "variants") + kept_section(args.out, "lds")
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(header + summary(results)[:-1] + paper_summary + [""] + body + paper_body).rstrip()
                 + "\n" + kept)
    print(f"wrote {args.out} ({elapsed:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
