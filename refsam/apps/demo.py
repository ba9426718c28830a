"""``refsam demo``: the whole pipeline on a seeded problem, with every method beside its ground truth.

Steps (each numbered in `run_demo()`):
  1. data: a seeded dataset, split into training and validation sets; 10% of the training labels flipped
  2. SAM training (full batch, decoupled weight decay), recorded as a trajectory
  3. fixed-point verification: refine θ_T to a root θ̂ of G(θ) = ∇F(θ + ε(θ)) + λθ and report the
     residual ‖G‖, the spectral radius of I − η ∂G/∂θ and the condition number of ∂G/∂θ
  4. influence I_j(f) of every training point on f = mean validation loss, by every method
  5. ground truth on a subset of training points: leave-one-out retraining, and finite differences of
     the run and of the re-solved root
  6. mislabeled-data detection by self-influence, against the loss-value and random baselines
  7. the report (and, with matplotlib, figures)

Sign convention (docs/contract.md): removing j changes f by about −I_j(f); the report's "predicted" column is
that quantity and "actual" is the change measured by retraining.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import (
    BUILTIN_DATASETS,
    check_labels_fit,
    flip_labels,
    load_dataset,
    project_pca,
    standardize,
    train_test_split,
)
from ..data.loaders import Dataset
from ..errors import InvalidInputError
from ..ground_truth.parallel import check_parallel
from ..influence import FixedPoint, fixed_point_diagnostics
from ..models import MODEL_NAMES, build_model
from ..objective import Problem
from ..sam import RULES, SAM
from ..tolerances import rel_err, run_at_root
from ..training import SGD
from ..validation import (
    check_nonnegative,
    check_output_directory,
    check_positive,
    check_positive_int,
    check_progress,
)
from .agreement import Agreement, GroundTruth, choose_subset, compare_methods, ground_truth
from .detection import BASELINES, DetectionResult, detect_mislabeled
from .fitting import CLOSED_FORM_METHODS, METHODS, Fit, fit, resolve_method
from .removal import accuracy

__all__ = [
    "MODELS",
    "QUICK",
    "DemoConfig",
    "DemoResult",
    "DEFAULT_FLIP",
    "format_fixed_point",
    "format_report",
    "format_table",
    "prepare_data",
    "run_demo",
]

MODELS = MODEL_NAMES


@dataclass
class DemoConfig:
    dataset: str = "synthetic"  # a built-in name (synthetic, synthetic2d, breast_cancer, digits) or a path
    n: int | None = None  # rows to use (train + validation); None: 250 for synthetic, all rows otherwise
    pca: int | None = None  # project standardised features on this many principal components (None: off)
    model: str = "logistic"  # logistic | softmax | mlp
    hidden: int = 8  # MLP hidden width
    rule: str = "sam"  # sam | usam | asam
    rho: float = 0.05  # SAM radius ρ
    weight_decay: float = 1e-2  # λ, the optimizer's weight decay (torch.optim.SGD's)
    lr: float = 0.5  # η
    steps: int = 300  # T, full-batch SAM steps (enough for the run to reach the root)
    momentum: float = 0.0  # μ of the base optimizer (torch.optim.SGD semantics); 0: plain SGD
    nesterov: bool = False  # Nesterov momentum
    dampening: float = 0.0  # τ
    flip_fraction: float | None = None  # labels flipped: None = 0.1 of a built-in set's, none of a file's
    val_fraction: float = 0.2  # held-out fraction for the validation loss f
    subset: int = 20  # training points validated against retraining
    seed: int = 0
    methods: tuple[str, ...] = METHODS  # influence methods to run (those that apply)
    out_dir: str | None = None  # where figures go (None: no figures)
    force: bool = False  # replace figure files refsam did not write (or links) in out_dir
    progress: bool | None = None  # progress lines on stderr; None: where stderr is a terminal
    n_jobs: int = 1  # processes for the ground truth's per-point loop (-1: every CPU); same numbers

    def optimizer(self) -> SGD:
        """The base optimizer these settings describe (the one place they become an object)."""
        return SGD(self.lr, self.momentum, self.dampening, self.nesterov, self.weight_decay)

    def validate(self) -> DemoConfig:
        check_positive_int("steps", self.steps)
        self.optimizer()  # validates lr, momentum, dampening, nesterov, weight_decay
        check_positive_int("subset", self.subset)
        check_positive_int("hidden", self.hidden)
        check_positive("lr", self.lr)
        check_nonnegative("rho", self.rho)
        check_nonnegative("weight_decay", self.weight_decay)
        check_parallel(None, self.n_jobs)
        if self.out_dir is not None:
            self.out_dir = check_output_directory("out_dir", self.out_dir)
            from .plotting import FIGURE_NAMES, check_figure_targets

            check_figure_targets(self.out_dir, FIGURE_NAMES["demo"], self.force)
        if self.model not in MODELS:
            raise InvalidInputError(f"`model` must be one of {list(MODELS)}, got {self.model!r}")
        if self.rule not in RULES:
            raise InvalidInputError(f"`rule` must be one of {list(RULES)}, got {self.rule!r}")
        if self.flip_fraction is not None and not 0 <= self.flip_fraction < 1:
            raise InvalidInputError(f"`flip_fraction` must lie in [0, 1), got {self.flip_fraction}")
        try:
            self.methods = tuple(resolve_method(m).name for m in self.methods)
        except ValueError:
            unknown = sorted(str(m) for m in self.methods if not _known(m))
            raise InvalidInputError(f"`methods` must be among {list(METHODS)}, got {unknown}") from None
        return self


DEFAULT_FLIP = 0.10  # labels flipped in a built-in dataset's training set unless told (a file's: none)
QUICK = {"n": 80, "steps": 100, "subset": 6}  # --quick: a smoke run in a few seconds


@dataclass
class DemoResult:
    config: DemoConfig
    data_summary: str
    fit: Fit
    diagnostics_end: FixedPoint | None  # fixed_point_diagnostics at θ_T (how close the run got to the root)
    truth: GroundTruth
    agreements: list[Agreement]
    detection: list[DetectionResult]
    flipped: np.ndarray
    accuracy: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)




def prepare_data(dataset: str, n: int | None, model: str, flip_fraction: float | None, val_fraction: float,
                 seed: int, pca: int | None = None) -> tuple[Dataset, Dataset]:
    """Load, split, standardise (optionally project on ``pca`` principal components) and flip a fraction
    of the training labels.

    ``flip_fraction=None`` plants noise only where it is a benchmark: `DEFAULT_FLIP` of a built-in
    dataset's training labels, none of a file's (a user's labels are taken as they are, and an NPZ file's
    own ``flipped`` array, if any, marks the noise). A file with its own ``flipped`` array is not flipped
    again. ``val_fraction=0`` holds nothing out (``val`` is empty). Returns (train, val)
    `Dataset` objects; ``train.flipped`` marks the noise
    and ``train.rows``/``val.rows`` each sample's row in the source.
    """
    if n is None and dataset in ("synthetic", "synthetic2d"):
        n = 250
    data = load_dataset(dataset, n=n, seed=seed)
    check_labels_fit(data, model)
    if flip_fraction is None:
        flip_fraction = DEFAULT_FLIP if dataset in BUILTIN_DATASETS else 0.0
    if flip_fraction > 0 and data.flipped.any():
        raise InvalidInputError(f"`flip_fraction` {flip_fraction}: {data.name} marks its own flipped labels "
                                f"(its `flipped` array); use 0 (--flip 0) to detect those")
    if val_fraction == 0:  # every row trains (detect ranks them all); an empty validation set
        train, val = data, data.subset(np.arange(0))
    else:
        train, val = train_test_split(data, val_fraction, seed=seed)
    train, val = standardize(train, val)
    if pca is not None:
        train, val = project_pca(train, val, n_components=pca)
    if flip_fraction == 0:
        return train, val
    y_noisy, flipped = flip_labels(train.y, train.n_classes, flip_fraction, seed=seed + 1)
    if flipped.all():  # checked here, before any training: nothing clean is left to learn from
        raise InvalidInputError(f"`flip_fraction` {flip_fraction} flips all {train.n} training labels; use a "
                         f"smaller fraction (at most {(train.n - 1) / train.n:.3f} here)")
    train.y, train.flipped = y_noisy, flipped
    return train, val


def _known(method: object) -> bool:
    try:
        resolve_method(method)
    except ValueError:
        return False
    return True


def run_demo(config: DemoConfig | None = None) -> DemoResult:
    """Run the demo pipeline (module docstring) and return everything the report needs."""
    config = (config or DemoConfig()).validate()
    progress = check_progress(config.progress)

    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    timings = {}
    # 1. data
    train, val = prepare_data(config.dataset, config.n, config.model, config.flip_fraction,
                              config.val_fraction, config.seed, config.pca)
    model = build_model(config.model, train.p, train.n_classes, config.hidden)
    problem = Problem(model, train.X, train.y)
    sam = SAM(config.rho, config.rule)
    data_summary = (f"{train.name}: {train.n} training points ({int(train.flipped.sum())} labels flipped), "
                    f"{val.n} validation points, {train.p} features, {train.n_classes} classes; "
                    f"{model!r}, d = {problem.d}")
    say(f"[1/6] data: {data_summary}")

    # 2.-3. training and the fixed point
    say(f"[2/6] training: {sam!r}, λ = {config.weight_decay}, η = {config.lr}, T = {config.steps} "
        f"full-batch steps, then refining θ_T to the SAM root")
    fit_ = fit(problem, sam, config.optimizer(), config.steps, seed=config.seed, progress=False)
    timings["train + root"] = fit_.train_time
    diagnostics_end = None
    try:
        diagnostics_end = fixed_point_diagnostics(problem, sam, fit_.theta_final, optimizer=fit_.optimizer)
    except (ValueError, FloatingPointError):
        pass
    accuracies = {
        "train (noisy labels)": accuracy(problem, fit_.theta_final, train.X, train.y),
        "validation": accuracy(problem, fit_.theta_final, val.X, val.y),
    }

    # 5. ground truth (before 4 so the progress reads in the order of cost)
    subset = choose_subset(problem.n, config.subset, train.flipped, seed=config.seed)
    say(f"[3/6] ground truth on {subset.size} training points: leave-one-out and finite differences")
    truth = ground_truth(fit_, val.X, val.y, subset, progress=progress, n_jobs=config.n_jobs)
    timings["ground truth"] = truth.seconds

    # 4. influence by every method
    methods = [m for m in config.methods if m in fit_.available_methods()]
    say(f"[4/6] influence on the validation loss by {len(methods)} methods")
    agreements = compare_methods(fit_, val.X, val.y, truth, methods, progress=progress)

    # 6. detection
    say("[5/6] mislabeled-data detection by self-influence")
    known = train.flipped if train.flipped.any() else None  # a user's file: the noise is unknown
    detection = detect_mislabeled(fit_, known, methods, seed=config.seed, progress=progress)

    result = DemoResult(config, data_summary, fit_, diagnostics_end, truth, agreements, detection,
                        train.flipped, accuracies, timings)
    # 7. figures
    if config.out_dir:
        say("[6/6] figures")
        from .plotting import demo_figures

        result.figures = demo_figures(result, config.out_dir, config.force)
    return result


# -- the report ----------------------------------------------------------------------------------------

def _momentum_text(c: DemoConfig) -> str:
    if not c.momentum:
        return ""
    kind = "Nesterov" if c.nesterov else "heavy-ball"
    return f", {kind} momentum {c.momentum:g}" + (f" (dampening {c.dampening:g})" if c.dampening else "")


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "—"
    return format(x, spec)


def format_table(header: Any, rows: Any) -> str:
    """A plain-text table with right-aligned columns (left-aligned first column)."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def format_fixed_point(fit_: Fit, diagnostics_end: FixedPoint | None) -> str:
    lines = []
    if diagnostics_end is not None:
        lines.append(f"end of the run θ_T:  ‖G(θ_T)‖ = {diagnostics_end.residual:.2e}")
    fp = fit_.fixed_point
    if fp is None:
        lines.append(f"no SAM root: {fit_.fixed_point_note}. Closed-form methods skipped; "
                     f"trajectory methods are exact for the recorded run.")
        return "\n".join(lines)
    verdict = "verified root" if fp.converged else "NOT a verified root: closed form is approximate"
    lines.append(f"refined root θ̂:     ‖G(θ̂)‖ = {fp.residual:.2e} ({verdict}), "
                 f"‖θ_T − θ̂‖ = {np.linalg.norm(fit_.theta_final - fp.theta):.2e}")
    if fp.spectral_radius is not None:
        stable = "< 1: SAM converges to θ̂" if fp.stable else ">= 1: SAM is repelled from θ̂"
        momentum = getattr(fp.optimizer, "momentum", 0.0)
        iteration = "I − η ∂G/∂θ" if not momentum else f"the momentum iteration (μ = {momentum:g})"
        lines.append(f"spectral radius of {iteration} = {fp.spectral_radius:.4f} ({stable})")
    lines.append(f"condition number of ∂G/∂θ = {fp.condition_number:.3e}")
    if not run_at_root(fit_.theta_final, fp.theta):
        lines.append("θ_T is not at θ̂: closed-form methods describe the root, trajectory methods the run "
                     "actually trained (docs/validity.md)")
    return "\n".join(lines)


def format_report(result: DemoResult) -> str:
    """The demo's text report."""
    c, fit_, truth = result.config, result.fit, result.truth
    out = ["refsam demo — data attribution for Sharpness-Aware Minimization", "",
           f"data      {result.data_summary}",
           f"training  {fit_.sam!r}, λ = {c.weight_decay} (SGD weight decay), η = {c.lr}, T = {c.steps}, "
           f"full batch{_momentum_text(c)}; {fit_.train_time:.2f} s",
           "accuracy  " + ", ".join(f"{k} {v:.3f}" for k, v in result.accuracy.items()), "",
           "Fixed point", format_fixed_point(fit_, result.diagnostics_end), ""]
    root_ok = not np.all(np.isnan(truth.loo_root))
    loo_note = ""
    if root_ok:
        loo_note = (f"; re-solved-root LOO matches retraining to rel. err "
                    f"{rel_err(truth.loo_root, truth.loo_run):.1e}")
    out += [f"Influence on f = mean validation loss; ground truth on {truth.subset.size} training points "
            f"(leave-one-out retraining, finite differences; {truth.seconds:.1f} s{loo_note})",
            "  predicted change on removing j = −I_j(f); 'derivative err' = max rel. error of I_j(f) "
            "against finite differences of what the method differentiates (root or run)"]
    det = {d.method: d for d in result.detection}
    rows = []
    for a in result.agreements:
        target = "root" if a.method in CLOSED_FORM_METHODS else "run"
        d = det.get(a.method)
        rows.append([a.method, f"{_fmt(a.max_rel_err, '.1e')} ({target})", _fmt(a.pearson, ".4f"),
                     _fmt(a.spearman, ".4f"), _fmt(d.metrics.get("top10%") if d else None, ".2f"),
                     _fmt(d.metrics.get("auroc") if d else None, ".3f"),
                     f"{a.seconds + (d.seconds if d else 0):.2f}"])
    for name in BASELINES:
        d = det[name]
        rows.append([f"{name} (baseline)", "—", "—", "—", _fmt(d.metrics.get("top10%"), ".2f"),
                     _fmt(d.metrics.get("auroc"), ".3f"), f"{d.seconds:.2f}"])
    out.append(format_table(["method", "derivative err", "Pearson(LOO)", "Spearman(LOO)",
                             "top-10% recall", "AUROC", "time [s]"], rows))
    if result.flipped.any():
        out += ["", f"Detection: fraction of the {int(result.flipped.sum())} flipped labels among the "
                "top-ranked training points (score −I_j(ℓ_j), self-influence)"]
        rows = [[d.method] + [_fmt(v, ".3f") for v in d.metrics.values()] for d in result.detection]
        out.append(format_table(["method"] + list(result.detection[0].metrics), rows))
    else:
        out += ["", "Detection: no label is known to be flipped (--flip 0, a file's labels as given); "
                "`refsam detect` lists the most suspicious rows"]
    out += ["", "How to read this: docs/tutorial.md. When each method is exact: docs/validity.md."]
    if result.figures:
        out += ["", "Figures written:"] + [f"  {path}" for path in result.figures]
    return "\n".join(out)
