"""The reference suite's recipe: 84 small recorded SAM runs and their self-checked outputs.

The suite spans model (logistic, softmax, mlp) × rule (sam, usam, asam) × penalty (λ as the
optimizer's ``weight_decay``, or as the loss's ``l2``) × batching (full, minibatch) — 36 cases with
plain SGD — plus, on minibatches with the optimizer's weight decay, 6 momentum cases (model × heavy
ball, Nesterov; μ = 0.9), 9 preset cases (model × the presets
of the public implementations, `refsam.training.presets`, with heavy-ball momentum) and 6 Adam cases
(model × ``Adam`` with λ inside the moments, ``AdamW`` with decoupled λ; a linear warm-up + cosine
schedule and gradient clipping by global norm, torch's convention, that clips some steps), and 27
cases of the SAM variants (model × the presets of their official codes: ``composer-sam`` every 2 steps,
``fisher-sam``, ``friendly-sam``, ``gnp`` with its L2 in the loss, Nesterov and its clip, ``gsam`` with
its ρ schedule, ``sam-on`` on the weight matrices; minibatch runs, and full-batch runs of the three with
a fixed point: Fisher SAM, GSAM at a constant ρ, SAM-ON). Each has n_train = 12, n_test = 3, d ≤ 20,
T = 20. `make_run()` is the deterministic recipe of one case;
`build_case()` adds the exact influence and the ground truth, refusing to return a case whose
self-check fails. Files are `refsam.kit.files`.
"""

from __future__ import annotations

import copy
import fnmatch
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..data import make_gaussian_classification
from ..errors import InvalidInputError
from ..ground_truth import finite_difference_replay
from ..ground_truth.resolve import finite_difference_influence as finite_difference_root_influence
from ..influence import (
    FixedPointError,
    hessian_influence,
    residual_jacobian,
    solve_fixed_point,
    system_operators,
)
from ..influence.methods import method_info
from ..influence.trajectory import trajectory_influence, trajectory_parameter_influence
from ..models import MODEL_NAMES, build_model
from ..objective import Problem
from ..sam import BASE_RULES, RULES, SAM, NoStepMapError
from ..tolerances import (
    FD_STEP,
    ROOT_TOL,
    RTOL_CASE_EXACT,
    RTOL_CHAIN_RULE,
    RTOL_CLOSED_FORM_FD,
    RTOL_JACOBIAN,
    RTOL_TRAJECTORY_FD,
    rel_err,
)
from ..training import SGD, Adam, AdamW, Optimizer, Trajectory, preset, sam_gradient, train
from ..training.schedules import linear_warmup_cosine_lr

__all__ = [
    "ATOL",
    "BATCHINGS",
    "CASE_SPECS",
    "MODELS",
    "OUTPUT_METHODS",
    "OUTPUT_RTOL",
    "PENALTIES",
    "RTOL_EXACT",
    "RULES",
    "TARGETS",
    "CaseSpec",
    "build_case",
    "case_ids",
    "make_run",
    "recompute_case",
    "remember_case",
    "select_specs",
    "spec_of",
]

Array = NDArray[np.float64]

# -- the suite's axes and sizes -----------------------------------------------------------------------
MODELS = MODEL_NAMES  # ("logistic", "softmax", "mlp"), refsam.models' names
PENALTIES = ("weight_decay", "l2")  # where λ sits: the optimizer's weight decay, or an L2 term in the loss
BATCHINGS = ("full", "minibatch")

N_TRAIN = 12  # training points per case
N_TEST = 3  # test points per case: one influence column each
N_FEATURES = 3
STEPS = 20  # T
BATCH_SIZE = 4  # minibatch cases: 3 batches per epoch, reshuffled every epoch
LR = 0.5  # η; minibatch cases decay it linearly, η_t = η (1 − t/(2T)) (the per-step lr array is exercised)
WEIGHT_DECAY = 0.05  # λ > 0 so that softmax has a nonsingular ∂G/∂θ
RHO = {"sam": 0.1, "usam": 0.2, "asam": 0.5, "fisher": 0.1, "friendly": 0.1}  # ρ per rule: each moves
# the influence by several percent
KAPPA = 0.01  # ASAM's κ
MOMENTUM = 0.9  # μ of the momentum and preset cases (their lr is scaled by 1 − μ)
# The Adam and AdamW cases (minibatch, λ = WEIGHT_DECAY as the optimizer's weight decay, SAM rule):
ADAM_LR = 0.05  # peak η of the schedule
ADAM_WARMUP_STEPS = 3  # linear warm-up from ADAM_WARMUP_START · η to η over 3 steps, then cosine to 0
ADAM_WARMUP_START = 0.1
ADAM_BETAS = (0.9, 0.999)  # torch's defaults
ADAM_EPS = 1e-8  # torch's default, outside the root
ADAM_EPS_ROOT = 0.0  # torch's (no eps_root): no √v̂ is round-off small in these runs (no warning fires)
# The clipping threshold c per model (torch's clip_grad_norm_, s = min(1, c/(‖g̃‖ + 1e-6))): each Adam and
# AdamW run clips 5 to 12 of its 20 steps, and ‖g̃_t‖ + 1e-6 stays ≥ 1.7% of c away from c at every step
# (far from the kink; tests/6_oracle_kit/test_adam_cases.py checks both).
CLIP_GRAD_NORM = {"logistic": 0.6, "softmax": 0.7, "mlp": 0.45}
DATA_SEED = {"logistic": 1, "softmax": 2, "mlp": 3}  # data, θ_0 and batch shuffles per model
PROBE_SEED = 4  # the probe vectors of J v and Jᵀ v

# -- tolerances: each stored output carries the one a comparison against it should use (their reasons
# are in refsam.tolerances, the one table of named tolerances)
RTOL_EXACT = RTOL_CASE_EXACT  # an external float64 port vs a stored exact output
ATOL = 0.0  # the criterion is relative to ‖reference‖_∞, so no absolute floor is needed
# The loosest tolerance each stored output may carry: a manifest that claims a looser one (an edit, a
# bit flip) is rejected, so no edit of the manifest can turn failing scores into a pass.
OUTPUT_RTOL = {
    "trajectory": RTOL_EXACT, "trajectory_parameters": RTOL_EXACT, "trajectory_fd": RTOL_TRAJECTORY_FD,
    "closed_form": RTOL_EXACT, "closed_form_frozen": RTOL_EXACT, "closed_form_erm": RTOL_EXACT,
    "closed_form_fd": RTOL_CLOSED_FORM_FD,
    "jacobian_products": RTOL_EXACT, "jacobian_T_products": RTOL_EXACT,
}
ROOT_WARMUP_STEPS = 200  # extra full-batch SAM steps from θ_T that warm-start the root finder
N_PROBES = 2  # probe vectors v for the stored products J v and Jᵀ v (seeded by the case's data seed)

# The stored outputs: the methods' names and descriptions come from the method table; the ground truths
# and the parameter influence are the suite's own.
_METHOD_OUTPUTS = ("trajectory", "closed_form", "closed_form_frozen", "closed_form_erm")
OUTPUT_METHODS = {
    **{name: method_info(name).summary for name in _METHOD_OUTPUTS[:1]},
    "trajectory_fd": "central finite differences of replaying the run with w_j = 1 ± h (ground truth)",
    "trajectory_parameters": "exact parameter influence d theta_T / d w_j (row j), adjoint recursion",
    **{name: method_info(name).summary for name in _METHOD_OUTPUTS[1:]},
    "closed_form_fd": "central finite differences of the re-solved root with w_j = 1 ± h (ground truth)",
    "jacobian_products": "J v = dG/dtheta v at the root for the probe vectors v (columns), matrix-free",
    "jacobian_T_products": "J^T v at the root for the probe vectors v (columns): what an iterative "
                           "solver of the closed form applies",
}
TARGETS = tuple(OUTPUT_METHODS)

# Arrays every case file holds (name -> description); shapes are checked against the manifest.
TRAJECTORY_ARRAYS = ("X", "y", "X_test", "y_test", "weights", "theta0", "thetas", "epsilons", "lrs",
                     "batch_indices", "batch_offsets", "test_losses")




# -- the suite ------------------------------------------------------------------------------------------
SGD_OPTIMIZERS = {"sgd": (0.0, False), "heavyball": (MOMENTUM, False), "nesterov": (MOMENTUM, True)}
ADAM_OPTIMIZERS: dict[str, type[Adam]] = {"adam": Adam, "adamw": AdamW}
OPTIMIZERS = (*SGD_OPTIMIZERS, *ADAM_OPTIMIZERS)  # the base optimizers' names in case ids


@dataclass(frozen=True)
class CaseSpec:
    """One case: a point of the grid model × rule × penalty (where λ sits) × batching, with the base
    optimizer (``sgd``, ``heavyball``, ``nesterov``, ``adam``, ``adamw``) and optionally a preset of a public
    implementation."""

    model: str
    rule: str
    penalty: str
    batching: str
    optimizer: str = "sgd"
    preset: str | None = None

    @property
    def case_id(self) -> str:
        base = f"{self.model}-{self.rule}-{self.penalty}-{self.batching}"
        return base + ("" if self.optimizer == "sgd" else f"-{self.optimizer}") + (
            f"-{self.preset}" if self.preset else "")


_PRESET_RULES = {"pytorch-sam": "sam", "pytorch-sam-adaptive": "asam", "asam-official": "asam"}
# The SAM variants' presets (their official codes' conventions), each a minibatch run of every model, and
# the full-batch runs of those whose step map has a fixed point (closed form): their rule, and the
# optimizer each recipe uses (GNP's: Nesterov, with its L2 in the loss).
_VARIANT_RULES = {"composer-sam": "sam", "fisher-sam": "fisher", "friendly-sam": "friendly", "gnp": "sam",
                  "gsam": "asam", "sam-on": "asam"}
_VARIANT_ROOTS = ("fisher-sam", "gsam", "sam-on")
VARIANT_RHO_MIN = 0.25  # GSAM's ρ_min as a fraction of ρ: its ρ_t then follows the decaying lr
VARIANT_EVERY = 2  # interval SAM: a SAM step every second step
CASE_SPECS = (
    tuple(CaseSpec(m, r, pen, b)
          for m in MODELS for r in BASE_RULES for pen in PENALTIES for b in BATCHINGS)
    + tuple(CaseSpec(m, "sam", "weight_decay", "minibatch", o)
            for m in MODELS for o in ("heavyball", "nesterov"))
    + tuple(CaseSpec(m, _PRESET_RULES[p], "weight_decay", "minibatch", "heavyball", p)
            for m in MODELS for p in sorted(_PRESET_RULES))
    + tuple(CaseSpec(m, "sam", "weight_decay", "minibatch", o) for m in MODELS for o in ADAM_OPTIMIZERS)
    + tuple(CaseSpec(m, _VARIANT_RULES[p], "l2" if p == "gnp" else "weight_decay", b,
                     "nesterov" if p == "gnp" else "heavyball", p)
            for m in MODELS for p in sorted(_VARIANT_RULES)
            for b in (("full", "minibatch") if p in _VARIANT_ROOTS else ("minibatch",)))
)


def case_ids(pattern: str | None = None) -> list[str]:
    """Ids of the suite's cases, optionally filtered by a shell-style pattern (``"mlp-*"``)."""
    return [s.case_id for s in select_specs(pattern)]


def select_specs(pattern: str | None) -> list[CaseSpec]:
    """The suite's case specs whose id matches the shell-style ``pattern`` (None: all 84)."""
    if pattern is None:
        return list(CASE_SPECS)
    specs = [s for s in CASE_SPECS if fnmatch.fnmatchcase(s.case_id, pattern)]
    if not specs:
        raise InvalidInputError(
            f"`cases` pattern {pattern!r} matches no case; ids look like 'logistic-sam-weight_decay-full' "
            f"(model-rule-penalty-batching)"
        )
    return specs


def make_run(spec: CaseSpec) -> tuple[Problem, SAM, Trajectory, Array, NDArray[np.int64]]:
    """(problem, sam, trajectory, X_test, y_test) of one case: the deterministic recipe."""
    model = build_model(spec.model, N_FEATURES, n_classes=2 if spec.model == "mlp" else 3, hidden=3)
    seed = DATA_SEED[spec.model]
    X_all, y_all, _ = make_gaussian_classification(
        N_TRAIN + N_TEST, N_FEATURES, model.n_classes, separation=1.0, seed=seed
    )
    X, y = X_all[:N_TRAIN], y_all[:N_TRAIN]
    X_test, y_test = X_all[N_TRAIN:], y_all[N_TRAIN:]
    if spec.optimizer in ADAM_OPTIMIZERS:
        return _adam_run(spec, model, X, y, X_test, y_test)
    momentum, nesterov = SGD_OPTIMIZERS[spec.optimizer]
    lr: float | Array
    if spec.batching == "full":
        batch_size, lr = None, LR
    else:
        batch_size = BATCH_SIZE
        lr = LR * (1.0 - 0.5 * np.arange(STEPS) / STEPS)  # η_t = η (1 − t/(2T)), t = 0 … T−1
    if momentum:
        lr = (1.0 - momentum) * lr  # the same effective step size η/(1 − μ) as the SGD cases
    in_loss = spec.penalty == "l2"
    problem = Problem(model, X, y, l2=WEIGHT_DECAY if in_loss else 0.0)
    optimizer: Optimizer = SGD(lr, momentum, nesterov=nesterov, weight_decay=0.0 if in_loss else WEIGHT_DECAY)
    sam = SAM(RHO[spec.rule], spec.rule, kappa=KAPPA)
    clip = None
    if spec.preset is not None:  # the public implementation's rule, optimizer and λ placement
        chosen = preset(spec.preset, Problem(model, X, y), RHO[spec.rule], optimizer.lr, WEIGHT_DECAY,
                        momentum, nesterov, **_variant_keywords(spec, model))
        problem, sam, optimizer, clip = chosen.problem, chosen.sam, chosen.optimizer, chosen.clip_grad_norm
    trajectory = train(problem, sam, optimizer, STEPS, batch_size=batch_size, seed=seed, clip_grad_norm=clip,
                       progress=False)
    return problem, sam, trajectory, X_test, y_test


def _variant_keywords(spec: CaseSpec, model: Any) -> dict[str, Any]:
    """The variant presets' own choices in the suite: GSAM's ρ_min, SAM-ON's selected tensors (the weight
    matrices stand in for the normalisation layers: a bias starts at 0, where T = |θ| = 0), interval SAM's
    period."""
    if spec.preset == "gsam" and spec.batching == "minibatch":
        return {"rho_min": VARIANT_RHO_MIN * RHO[spec.rule]}
    if spec.preset == "sam-on":
        return {"perturb_mask": ~model.bias_mask(N_FEATURES)}
    if spec.preset == "composer-sam":
        return {"every": VARIANT_EVERY}
    return {}


def _adam_run(spec: CaseSpec, model: Any, X: Array, y: NDArray[np.int64], X_test: Array,
              y_test: NDArray[np.int64]) -> tuple[Problem, SAM, Trajectory, Array, NDArray[np.int64]]:
    """An Adam or AdamW case: λ as the optimizer's weight decay, the warm-up + cosine schedule, clipping."""
    if spec.penalty != "weight_decay" or spec.batching != "minibatch" or spec.preset is not None:
        raise InvalidInputError(f"case {spec.case_id!r}: the Adam cases are minibatch runs with the "
                                f"optimizer's weight decay and no preset")
    lrs = linear_warmup_cosine_lr(ADAM_LR, STEPS, ADAM_WARMUP_STEPS, ADAM_WARMUP_START)
    optimizer = ADAM_OPTIMIZERS[spec.optimizer](lrs, ADAM_BETAS, ADAM_EPS, WEIGHT_DECAY,
                                                eps_root=ADAM_EPS_ROOT)
    problem = Problem(model, X, y)
    sam = SAM(RHO[spec.rule], spec.rule, kappa=KAPPA)
    trajectory = train(problem, sam, optimizer, STEPS, batch_size=BATCH_SIZE, seed=DATA_SEED[spec.model],
                       clip_grad_norm=CLIP_GRAD_NORM[spec.model],  # a float: torch's convention
                       progress=False)
    return problem, sam, trajectory, X_test, y_test


def _descent_norms(problem: Problem, trajectory: Trajectory) -> Array:
    """‖g̃_t‖ (T,), the norm of each step's descent gradient before clipping: what the clip compares with
    its threshold."""
    sam = trajectory.sam()
    return np.array([np.linalg.norm(sam_gradient(problem, sam.at_step(t), trajectory.thetas[t], batch,
                                                 rule_state=trajectory.rule_state(t, sam)).descent)
                     for t, batch in enumerate(trajectory.batches)])


def _lr_schedule(spec: CaseSpec) -> str:
    if spec.optimizer in ADAM_OPTIMIZERS:
        start, warmup = ADAM_WARMUP_START, ADAM_WARMUP_STEPS
        return (f"linear warm-up + cosine: lr_t = lr ({start:g} + (1 - {start:g}) t / {warmup}) for t < "
                f"{warmup}, then lr (1 + cos(pi (t - {warmup}) / {STEPS - warmup})) / 2 (torch's "
                f"SequentialLR of LinearLR and CosineAnnealingLR), lr = {ADAM_LR:g}")
    return "constant" if spec.batching == "full" else "linear decay: lr_t = lr (1 - t / (2T))"


def _closed_form_outputs(problem: Problem, sam: SAM, trajectory: Trajectory, X_test: Array,
                         y_test: NDArray[np.int64], executor: Executor | None = None
                         ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(arrays, outputs-metadata, status) of the closed form, or ({}, {}, reason) without a verified root."""
    optimizer = trajectory.optimizer().replace(lr=float(trajectory.lrs[0]))
    # Warm start: θ_T after ROOT_WARMUP_STEPS more full-batch steps (T = 20 steps end too far from the
    # MLP roots for the root finder; the root found is the one the run is heading for).
    warm = train(problem, sam, optimizer, ROOT_WARMUP_STEPS, theta0=trajectory.theta_final,
                 progress=False).theta_final
    try:
        root = solve_fixed_point(problem, sam, warm, optimizer=optimizer, tol=ROOT_TOL, progress=False)
    except (FixedPointError, NoStepMapError) as exc:
        return {}, {}, f"no verified root: {str(exc).splitlines()[0]}"
    theta_hat = root.theta
    clipping = trajectory.clipping()
    if clipping is not None and clipping.clipped(sam_gradient(problem, sam, theta_hat).descent):
        # the root above is the unclipped map's; where the clip acts at θ̂ the clipped map's root differs
        return {}, {}, ("not computed: the run's gradient clipping acts at the root of the unclipped map, "
                        "whose closed form would then not be the clipped run's")
    arrays = {"theta_hat": theta_hat}
    for variant, name in (("full", "closed_form"), ("frozen", "closed_form_frozen"),
                          ("erm", "closed_form_erm")):
        arrays[f"influence_{name}"] = hessian_influence(problem, sam, root, X_test, y_test, variant=variant)
    arrays["influence_closed_form_fd"] = finite_difference_root_influence(
        problem, sam, root, X_test, y_test, h=FD_STEP, executor=executor, progress=False
    )
    err = rel_err(arrays["influence_closed_form"], arrays["influence_closed_form_fd"])
    if not err <= RTOL_CLOSED_FORM_FD:
        return {}, {}, (f"root not verified: closed form vs re-solved finite differences rel. err "
                        f"{err:.2e} > {RTOL_CLOSED_FORM_FD:.0e}")
    # What a matrix-free implementation needs to check its products before its solver: J v and Jᵀ v for
    # stored probe vectors, from Hessian-vector products, confirmed against the dense J.
    probes = np.random.default_rng(PROBE_SEED).standard_normal((problem.d, N_PROBES))
    ops = system_operators(problem, sam, root)
    arrays["probe_vectors"] = probes
    arrays["jacobian_products"] = ops.jacobian.matmat(probes)
    arrays["jacobian_T_products"] = ops.jacobian_T.matmat(probes)
    dense = residual_jacobian(problem, sam, theta_hat, optimizer=root.optimizer)
    product_err = max(rel_err(arrays["jacobian_products"], dense @ probes),
                      rel_err(arrays["jacobian_T_products"], dense.T @ probes))
    if not product_err <= RTOL_JACOBIAN:  # a refsam bug: never export it
        raise RuntimeError(f"matrix-free J v disagrees with the dense J (rel. err {product_err:.2e})")
    shape = (problem.n, len(y_test))  # (n_train, n_test)
    outputs = {
        "jacobian_products": _output("jacobian_products", [problem.d, N_PROBES], True, RTOL_EXACT,
                                     array="jacobian_products"),
        "jacobian_T_products": _output("jacobian_T_products", [problem.d, N_PROBES], True, RTOL_EXACT,
                                       array="jacobian_T_products"),
        "closed_form": _output("closed_form", shape, True, RTOL_EXACT, against="closed_form_fd", err=err,
                               tolerance=RTOL_CLOSED_FORM_FD),
        "closed_form_frozen": _output("closed_form_frozen", shape, True, RTOL_EXACT),
        "closed_form_erm": _output("closed_form_erm", shape, True, RTOL_EXACT),
        "closed_form_fd": _output("closed_form_fd", shape, False, RTOL_CLOSED_FORM_FD, step=FD_STEP),
    }
    for name in ("jacobian_products", "jacobian_T_products"):
        outputs[name]["probe"] = {"array": "probe_vectors"}
    outputs["closed_form"]["root"] = {
        "array": "theta_hat", "residual": float(f"{root.residual:.3e}"),
        "condition_number": float(f"{root.condition_number:.3e}"), "lr": root.lr,
        "spectral_radius": (None if root.spectral_radius is None  # Adam/AdamW: no radius is claimed
                            else float(f"{root.spectral_radius:.6f}")),
    }
    radius = ("no spectral radius claimed (a preconditioned iteration with its own state)"
              if root.spectral_radius is None else
              f"spectral radius of I - lr dG/dtheta = {root.spectral_radius:.4f}")
    status = (f"verified root: ||G(theta_hat)|| = {root.residual:.1e}, cond(dG/dtheta) = "
              f"{root.condition_number:.1e}, {radius}")
    return arrays, outputs, status


def _output(name: str, shape: Any, exact: bool, rtol: float, against: str | None = None,
            err: float | None = None, tolerance: float | None = None,
            step: float | None = None, array: str | None = None) -> dict[str, Any]:
    out = {"array": array or f"influence_{name}", "shape": list(shape), "method": OUTPUT_METHODS[name],
           "exact": exact, "rtol": rtol, "atol": ATOL}
    if against is not None:
        out["verified_against"] = {"output": against, "rel_err": float(f"{err:.3e}"),
                                   "tolerance": tolerance}
    if step is not None:
        out["fd_step"] = step
    return out


def build_case(spec: CaseSpec, executor: Executor | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays, manifest entry without file/sha256) for one case, self-checked before it is returned.
    ``executor``: runs the finite-difference self-checks' per-point loops (same numbers)."""
    problem, sam, trajectory, X_test, y_test = make_run(spec)
    offsets = np.cumsum([0] + [len(b) for b in trajectory.batches]).astype(np.int64)
    arrays = {
        "X": problem.X, "y": problem.y.astype(np.int64),
        "X_test": X_test, "y_test": y_test.astype(np.int64),
        "weights": trajectory.weights, "theta0": trajectory.theta0,
        "thetas": trajectory.thetas, "epsilons": trajectory.epsilons, "lrs": trajectory.lrs,
        "batch_indices": np.concatenate(trajectory.batches).astype(np.int64), "batch_offsets": offsets,
        "test_losses": problem.model.losses(trajectory.theta_final, X_test, y_test),
    }
    for name, values in trajectory.states.items():  # the optimizer's state after each step, (T, d)
        arrays[f"state_{name}"] = values  # "momentum_buffer": buf_0 … buf_{T−1}
    exact = trajectory_influence(problem, trajectory, X_test, y_test, method="adjoint", progress=False)
    fd = finite_difference_replay(problem, trajectory, X_test, y_test, h=FD_STEP, executor=executor,
                                  progress=False)
    err = rel_err(exact, fd)
    if not err <= RTOL_TRAJECTORY_FD:  # a failed self-check is a refsam bug: never export it
        raise RuntimeError(f"case {spec.case_id}: adjoint vs finite differences rel. err {err:.2e} "
                           f"> {RTOL_TRAJECTORY_FD:.0e}; refusing to export an unverified case")
    # dθ_T/dw_j, row j; checked by the chain rule: scores[j, k] = (dθ_T/dw_j) · ∇f_k(θ_T)
    parameters = trajectory_parameter_influence(problem, trajectory, method="adjoint",
                                                progress=False)  # (n, d)
    test_grads = problem.model.per_sample_grads(trajectory.theta_final, X_test, y_test)  # (m, d)
    chain_err = rel_err(parameters @ test_grads.T, exact)
    if not chain_err <= RTOL_CHAIN_RULE:
        raise RuntimeError(f"case {spec.case_id}: parameter influence contradicts the scores by the chain "
                           f"rule (rel. err {chain_err:.2e} > {RTOL_CHAIN_RULE:.0e}); refusing to export")
    arrays["influence_trajectory"] = exact
    arrays["influence_trajectory_fd"] = fd
    arrays["influence_trajectory_parameters"] = parameters
    shape = (problem.n, len(y_test))  # (n_train, n_test)
    outputs = {
        "trajectory": _output("trajectory", shape, True, RTOL_EXACT, against="trajectory_fd", err=err,
                              tolerance=RTOL_TRAJECTORY_FD),
        "trajectory_fd": _output("trajectory_fd", shape, False, RTOL_TRAJECTORY_FD, step=FD_STEP),
        "trajectory_parameters": _output("trajectory_parameters", (problem.n, problem.d), True, RTOL_EXACT,
                                         against="trajectory", err=chain_err, tolerance=RTOL_CHAIN_RULE),
    }
    if spec.penalty == "weight_decay" and spec.batching == "full":
        cf_arrays, cf_outputs, closed_form_status = _closed_form_outputs(problem, sam, trajectory,
                                                                         X_test, y_test, executor)
        arrays.update(cf_arrays)
        outputs.update(cf_outputs)
    elif spec.optimizer in ADAM_OPTIMIZERS:
        closed_form_status = ("not applicable: a minibatch run (a new batch, learning rate and clipping "
                              "factor each step) has no single fixed point; at a full-batch root Adam's "
                              "(λ inside the moments) is SGD's, g~ + λθ = 0, and AdamW's is g~/(|g~| + eps) "
                              "+ λθ = 0 (docs/optimizers.md)")
    else:
        closed_form_status = ("not applicable: the closed form is computed for full-batch runs with the "
                              "optimizer's weight decay, at a root")
    c = trajectory.config
    entry = {
        "id": spec.case_id,
        "model": c["model"],
        **sam.config(),  # the rule and every parameter of it (rho, kappa, a variant's own, masks)
        "l2": c["l2"], "optimizer": c["optimizer"], "penalty": spec.penalty,
        "batching": spec.batching, "batch_size": c["batch_size"],
        "steps": trajectory.steps,
        "lr_schedule": _lr_schedule(spec),
        "clip_grad_norm": c["clip_grad_norm"],
        "norm_eps": sam.norm_eps, "preset": spec.preset,
        "n_train": problem.n, "n_test": int(X_test.shape[0]), "n_features": problem.p,
        "n_params": problem.d, "n_classes": problem.model.n_classes,
        "outputs": outputs,
        "closed_form_status": closed_form_status,
    }
    clipping = trajectory.clipping()
    if clipping is not None:  # a measurement, for a port to compare its clipping with step by step
        norms = _descent_norms(problem, trajectory)
        entry["clipped_steps"] = [t for t, norm in enumerate(norms) if clipping.factor(norm) < 1.0]
    return arrays, entry




def spec_of(case_id: str) -> CaseSpec | None:
    """The suite's spec of the case ``case_id`` (None: no case of this suite has that id)."""
    return _SPECS_BY_ID.get(case_id)


_SPECS_BY_ID = {spec.case_id: spec for spec in CASE_SPECS}


def recompute_case(case_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays, manifest entry) of the case ``case_id`` computed by `build_case()` in this process —
    what ``refsam check`` grades against, never the stored files. Remembered per process (the recipe is
    code: the same id gives the same case, whichever executor ran its self-checks); read-only arrays."""
    if case_id not in _RECOMPUTED:
        spec = spec_of(case_id)
        if spec is None:
            raise InvalidInputError(f"no case {case_id!r} in this suite")
        remember_case(case_id, *build_case(spec))
    arrays, entry = _RECOMPUTED[case_id]
    return arrays, copy.deepcopy(entry)


def remember_case(case_id: str, arrays: dict[str, Any], entry: dict[str, Any]) -> None:
    """Keep a case `build_case()` computed in this process (export does) for `recompute_case()`."""
    frozen = {key: np.array(value) for key, value in arrays.items()}
    for value in frozen.values():
        value.flags.writeable = False
    _RECOMPUTED[case_id] = (frozen, copy.deepcopy(entry))


_RECOMPUTED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
