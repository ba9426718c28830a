"""The SAM variants (Fisher SAM, Friendly SAM, GSAM, the gradient-norm penalty, perturbation masks,
interval SAM, ρ schedules): the ladder of each.

1. the rule's and the direction's hand-written Jacobians vs autograd ≤ RTOL_DERIVATIVE (1e-10);
2. one step vs a NumPy transliteration of the official code (tests/2_step/official_variants.py, written
   from each repository by reading it) ≤ RTOL_STEP (1e-12);
3. adjoint = forward = autodiff through a run ≤ RTOL_EXACT_METHODS, and = central differences of
   replays ≤ RTOL_TRAJECTORY_FD;
4. the run's hypergradient d/dρ (a ρ schedule scaled with its peak) vs re-runs;
5. where the step has a fixed point: the closed form vs central differences of re-solved roots
   ≤ RTOL_CLOSED_FORM_FD; where it has none, a clear error.
"""

import pathlib
import sys

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refsam
from refsam import SAM
from refsam.ground_truth import finite_difference_influence
from refsam.influence import residual_jacobian
from refsam.sam import NoStepMapError
from refsam.tolerances import (
    FD_STEP,
    RTOL_CLOSED_FORM_FD,
    RTOL_DERIVATIVE,
    RTOL_EXACT_METHODS,
    RTOL_STEP,
    RTOL_TRAJECTORY_FD,
    rel_err,
)
from refsam.training import GradientClipping, sam_gradient

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "2_step"))
import official_variants as official  # noqa: E402

X3, y3, _ = refsam.make_gaussian_classification(n=14, n_features=3, n_classes=3, seed=11)
X_TEST, Y_TEST = X3[:3] + 0.2, y3[:3]
MLP = refsam.MLP((3, 4, 3))
D = MLP.n_params(3)
NOT_BIAS = ~MLP.bias_mask(3)  # the "weights": ASAM's t_mask in SAM-ON's recipe
MASK = np.zeros(D, dtype=bool)
MASK[MLP.bias_mask(3)] = True  # perturb the biases only (SAM-ON's normalisation layers stand in)
MASK[:4] = True  # ... and a few weights
STEPS = 8

VARIANTS = {
    "fisher": dict(rho=0.05, rule="fisher", fisher_eta=2.0, norm_eps=1e-12),
    "friendly": dict(rho=0.05, rule="friendly", sigma=1.0, ema=0.6, norm_eps=1e-12),
    "gsam": dict(rho=0.3, rule="asam", kappa=0.0, norm_eps=1e-12, direction="gsam", alpha=0.4),
    "gsam_sam": dict(rho=0.05, direction="gsam", alpha=0.3),
    "gnp": dict(rho=0.05, direction="gnp", alpha=0.8),
    "gnp_unit": dict(rho=0.05, direction="gnp", alpha=0.8, unit_gradient=True),
    "mask_asam": dict(rho=0.2, rule="asam", kappa=0.0, norm_eps=1e-16, perturb_mask=MASK, t_mask=NOT_BIAS),
    "mask_sam": dict(rho=0.05, perturb_mask=MASK),
    "mask_fisher": dict(rho=0.05, rule="fisher", perturb_mask=MASK),
    "every": dict(rho=0.05, every=3),
    "schedule": dict(rho=np.linspace(0.02, 0.08, STEPS)),
    "friendly_every_schedule": dict(rho=np.linspace(0.08, 0.02, STEPS), rule="friendly", every=2),
    "gsam_schedule": dict(rho=np.linspace(0.08, 0.02, STEPS), direction="gsam", alpha=0.4),
}
WITH_ROOT = ["fisher", "gsam", "gsam_sam", "gnp", "gnp_unit", "mask_asam", "mask_sam", "mask_fisher"]
NO_ROOT = {"friendly": "Friendly SAM", "every": "interval SAM", "schedule": "ρ schedule",
           "friendly_every_schedule": "Friendly SAM", "gsam_schedule": "ρ schedule"}


def _problem(l2=1e-3):
    return refsam.Problem(MLP, X3, y3, l2=l2)


def _point(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=D), rng.normal(size=D)


# -- 1. Jacobians ------------------------------------------------------------------------------------

RULE_JACOBIANS = ["fisher", "friendly", "mask_asam", "mask_sam", "mask_fisher", "gsam"]


@pytest.mark.parametrize("name", RULE_JACOBIANS)
@pytest.mark.parametrize("seed", [0, 1])
def test_rule_jacobians_equal_autograd(name, seed):
    sam = SAM(**VARIANTS[name])
    theta, g = _point(seed)
    auto_g = autograd.jacobian(lambda x: sam.perturbation(theta, x))(g)
    auto_theta = autograd.jacobian(lambda x: sam.perturbation(x, g))(theta)
    eye = np.eye(D)
    assert np.abs(auto_g).max() > 1e-3
    assert rel_err(sam.jvp_g(theta, g, eye), auto_g) <= RTOL_DERIVATIVE
    assert rel_err(sam.vjp_g(theta, g, eye), auto_g.T) <= RTOL_DERIVATIVE
    assert rel_err(sam.jacobian_g(theta, g), auto_g) <= RTOL_DERIVATIVE
    assert rel_err(sam.jvp_theta(theta, g, eye), auto_theta) <= RTOL_DERIVATIVE
    assert rel_err(sam.vjp_theta(theta, g, eye), auto_theta.T) <= RTOL_DERIVATIVE
    assert rel_err(sam.jacobian_theta(theta, g), auto_theta) <= RTOL_DERIVATIVE
    if sam.perturb_mask is not None:  # ε and its Jacobians vanish off the mask
        assert not np.any(sam.perturbation(theta, g)[~MASK])
        assert not np.any(sam.jvp_g(theta, g, eye)[~MASK]) and not np.any(sam.vjp_g(theta, g, eye)[:, ~MASK])


def test_fisher_jacobian_is_not_symmetric_and_the_vjp_is_its_transpose():
    sam = SAM(0.1, "fisher", fisher_eta=3.0)
    theta, g = _point(3)
    J = sam.jacobian_g(theta, g)
    assert rel_err(J, J.T) > 1e-3  # a transpose mistake would not be seen with a symmetric Jacobian
    v = np.random.default_rng(0).normal(size=D)
    assert rel_err(sam.vjp_g(theta, g, v), J.T @ v) <= RTOL_DERIVATIVE


@pytest.mark.parametrize("name", ["gsam", "gsam_sam", "gnp", "gnp_unit"])
@pytest.mark.parametrize("seed", [0, 1])
def test_direction_jacobians_equal_autograd(name, seed):
    sam = SAM(**VARIANTS[name])
    g, g_p = _point(seed)
    g_p = g + 0.3 * g_p  # g^p close to g, as in a run
    auto_g = autograd.jacobian(lambda x: sam.descent(x, g_p))(g)
    auto_p = autograd.jacobian(lambda x: sam.descent(g, x))(g_p)
    eye, zero = np.eye(D), np.zeros((D, D))
    assert rel_err(sam.descent_jvp(g, g_p, eye, zero), auto_g) <= RTOL_DERIVATIVE
    assert rel_err(sam.descent_jvp(g, g_p, zero, eye), auto_p) <= RTOL_DERIVATIVE
    vjp_g, vjp_p = sam.descent_vjp(g, g_p, eye)
    assert rel_err(vjp_g, auto_g.T) <= RTOL_DERIVATIVE
    assert rel_err(vjp_p, auto_p.T) <= RTOL_DERIVATIVE


def test_directions_reduce_to_sam_where_they_should():
    g, g_p = _point(5)
    assert np.array_equal(SAM(0.1, direction="gnp", alpha=1.0).descent(g, g_p), g_p)
    assert np.array_equal(SAM(0.1, direction="gsam", alpha=0.0).descent(g, g_p), g_p)
    # GSAM removes from g^p nothing along it: g̃ − g^p is orthogonal to g^p up to e = 1e-12
    sam = SAM(0.1, direction="gsam", alpha=0.7)
    diff = sam.descent(g, g_p) - g_p
    assert abs(diff @ g_p) <= 1e-10 * np.linalg.norm(diff) * np.linalg.norm(g_p)


# -- 2. one step against the official codes ------------------------------------------------------------

def _grad_fn(problem, idx=None):
    return lambda params: [problem.grad(np.concatenate(params), idx)]


def _step(sam, problem, theta, t=0, rule_state=None):
    return sam_gradient(problem, sam.at_step(t), theta, rule_state=rule_state)


def test_gsam_step_equals_the_official_code():
    problem = _problem(l2=0.0)
    theta, _ = _point(7)
    for adaptive in (True, False):
        ref = official.gsam_grad([theta], _grad_fn(problem), rho=0.3, alpha=0.4, adaptive=adaptive)
        sam = (SAM(0.3, "asam", kappa=0.0, norm_eps=1e-12, direction="gsam", alpha=0.4) if adaptive
               else SAM(0.3, norm_eps=1e-12, direction="gsam", alpha=0.4))
        terms = _step(sam, problem, theta)
        assert rel_err(terms.eps, ref["e_w"][0]) <= RTOL_STEP
        assert rel_err(terms.descent, ref["grad"][0]) <= RTOL_STEP


def test_gsam_preset_rho_schedule_follows_the_official_loop_order():
    """The official example: ρ_t = ρ_min + (ρ_max − ρ_min)(lr_t − lr_min)/(lr_max − lr_min) of the lr the
    step uses, except ρ_0, computed from the lr scheduler's initial value 0 (so ρ_0 = ρ_min)."""
    lrs = refsam.training.cosine_annealing_lr(0.1, STEPS, eta_min=0.01)
    problem = _problem(l2=0.0)
    chosen = refsam.training.preset("gsam", problem, rho=2.0, lr=lrs, weight_decay=5e-4, rho_min=0.5,
                                    alpha=0.4)
    expected = official.gsam_rho(lrs, rho_max=2.0, rho_min=0.5, lr_max=0.1, lr_min=0.0,
                                 convention="gsam_scheduler_base")
    assert rel_err(chosen.sam.rhos, expected) <= RTOL_STEP
    assert chosen.sam.rhos[0] == 0.5 and chosen.sam.direction == "gsam" and chosen.sam.rule == "asam"


@pytest.mark.parametrize("unit", [True, False])
def test_gnp_step_equals_the_official_code(unit):
    problem = _problem(l2=1e-3)  # GNP's recipe: L2 inside the loss
    theta, _ = _point(8)
    grad_fn = _grad_fn(_problem(l2=0.0))
    sam = SAM(0.1, direction="gnp", alpha=0.8, unit_gradient=unit)
    terms = _step(sam, problem, theta)
    ref = official.gnp_grad([theta], grad_fn, rho=0.1, alpha=0.8, normalise=unit, l2_reg=1e-3,
                            gradient_clipping=1e10)
    assert rel_err(terms.eps, ref["e_w"][0]) <= RTOL_STEP
    assert rel_err(terms.descent, ref["grad"][0]) <= RTOL_STEP
    clip = 0.2 * np.linalg.norm(terms.descent)  # the recipe's clip, made active here
    ref = official.gnp_grad([theta], grad_fn, rho=0.1, alpha=0.8, normalise=unit, l2_reg=1e-3,
                            gradient_clipping=clip)
    assert rel_err(GradientClipping(clip, "optax").apply(terms.descent), ref["grad"][0]) <= RTOL_STEP


def test_friendly_steps_equal_the_official_code():
    """Three steps: the first a plain SAM step that starts m = g, then d = g − σ m_old and the new m."""
    problem = _problem(l2=0.0)
    theta, _ = _point(9)
    sam = SAM(0.2, "friendly", sigma=1.0, ema=0.6, norm_eps=1e-12)
    state, m = None, np.zeros(D)
    for t in range(3):
        ref = official.fsam_grad([theta], _grad_fn(problem), state, rho=0.2, sigma=1.0, lmbda=0.6)
        terms = _step(sam, problem, theta, t, m)
        assert rel_err(terms.eps, ref["e_w"][0]) <= RTOL_STEP
        assert rel_err(terms.descent, ref["grad"][0]) <= RTOL_STEP
        assert rel_err(terms.rule_state, ref["state"][0]) <= RTOL_STEP
        state, m = ref["state"], terms.rule_state
        theta = theta - 0.1 * terms.descent


def test_samon_step_equals_the_official_code():
    """ASAM-ON (the published runs): T = |θ| on the 'weight' tensors of the selected layers, 1 elsewhere,
    the norm over the selected tensors only, e = 1e-16; ε = 0 on the others."""
    problem = _problem(l2=0.0)
    theta, _ = _point(10)
    # the MLP's tensors in order W1 (3×4), b1, W2 (4×3), b2, named so that layer 2 is a "norm" layer
    sizes, names = [12, 4, 12, 3], ["fc1.weight", "fc1.bias", "norm.weight", "norm.bias"]
    assert sum(sizes) == D and np.array_equal(MLP.bias_mask(3), np.repeat([False, True, False, True], sizes))
    params = np.split(theta, np.cumsum(sizes)[:-1])

    def grad_fn(ps):
        return np.split(problem.grad(np.concatenate(ps)), np.cumsum(sizes)[:-1])

    ref = official.samon_grad(params, names, grad_fn, rho=0.5, adaptive=True, eta=0.0)
    selected = np.repeat([official.samon_selected(n) for n in names], sizes)
    weights = np.repeat(["weight" in n for n in names], sizes)
    sam = SAM(0.5, "asam", kappa=0.0, norm_eps=1e-16, perturb_mask=selected, t_mask=weights)
    terms = _step(sam, problem, theta)
    assert rel_err(terms.eps, np.concatenate(ref["e_w"])) <= RTOL_STEP
    assert rel_err(terms.descent, np.concatenate(ref["grad"])) <= RTOL_STEP
    # the README's command (--normalize_bias: T = |θ| on every selected tensor) is the preset
    ref = official.samon_grad(params, names, grad_fn, rho=0.5, adaptive=True, eta=0.0, normalize_bias=True)
    chosen = refsam.training.preset("sam-on", problem, rho=0.5, lr=0.1, weight_decay=5e-4,
                                    perturb_mask=selected)
    terms = _step(chosen.sam, problem, theta)
    assert rel_err(terms.eps, np.concatenate(ref["e_w"])) <= RTOL_STEP
    assert rel_err(terms.descent, np.concatenate(ref["grad"])) <= RTOL_STEP


def test_fisher_step_equals_the_third_party_code():
    problem = _problem(l2=0.0)
    theta, _ = _point(11)
    ref = official.fisher_sam_grad([theta], _grad_fn(problem), rho=0.1, eta=2.0)
    terms = _step(SAM(0.1, "fisher", fisher_eta=2.0, norm_eps=1e-12), problem, theta)
    assert rel_err(terms.eps, ref["e_w"][0]) <= RTOL_STEP
    assert rel_err(terms.descent, ref["grad"][0]) <= RTOL_STEP


def test_interval_steps_equal_composer():
    problem = _problem(l2=0.0)
    theta, _ = _point(12)
    sam = SAM(0.05, norm_eps=1e-12, every=3)
    for t in range(7):
        assert (sam.at_step(t).phase != "plain") == official.composer_is_sam_step(t, 3)
        ref = official.composer_sam_grad([theta], _grad_fn(problem), t, rho=0.05, interval=3)
        terms = _step(sam, problem, theta, t)
        assert rel_err(terms.eps, ref["e_w"][0]) <= RTOL_STEP if np.any(ref["e_w"][0]) else \
            not np.any(terms.eps)
        assert rel_err(terms.descent, ref["grad"][0]) <= RTOL_STEP


# -- 3. the exact methods through runs ------------------------------------------------------------------

def _run(name, optimizer, batch_size):
    problem = _problem()
    sam = SAM(**VARIANTS[name])
    run = refsam.train(problem, sam, optimizer, STEPS, batch_size=batch_size, seed=2, progress=False)
    return problem, run


OPTIMIZERS = {"sgd": lambda: refsam.SGD(0.1, momentum=0.9, weight_decay=0.01),
              "adamw": lambda: refsam.AdamW(0.02, eps=1e-3, weight_decay=0.05)}


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("opt, batch_size", [("sgd", None), ("adamw", 5)])
def test_exact_methods_agree_with_autodiff_and_replays(name, opt, batch_size):
    problem, run = _run(name, OPTIMIZERS[opt](), batch_size)
    adjoint = refsam.trajectory_influence(problem, run, X_TEST, Y_TEST, "adjoint", progress=False)
    forward = refsam.trajectory_influence(problem, run, X_TEST, Y_TEST, "forward", progress=False)
    auto = refsam.trajectory_influence(problem, run, X_TEST, Y_TEST, "autodiff")
    assert np.abs(auto).max() > 1e-6
    assert rel_err(adjoint, auto) <= RTOL_EXACT_METHODS
    assert rel_err(forward, auto) <= RTOL_EXACT_METHODS
    if opt == "sgd":
        fd = refsam.finite_difference_replay(problem, run, X_TEST, Y_TEST, progress=False)
        assert rel_err(adjoint, fd) <= RTOL_TRAJECTORY_FD


def test_the_variant_changes_the_influence():
    """The ladder above must be able to fail: each variant's influence differs from plain SAM's."""
    base_problem, base = _run("mask_sam", OPTIMIZERS["sgd"](), None)
    plain = refsam.train(base_problem, SAM(0.05), OPTIMIZERS["sgd"](), STEPS, seed=2, progress=False)
    reference = refsam.trajectory_influence(base_problem, plain, X_TEST, Y_TEST, progress=False)
    for name in ("fisher", "friendly", "gsam_sam", "gnp", "mask_sam", "every", "schedule"):
        problem, run = _run(name, OPTIMIZERS["sgd"](), None)
        influence = refsam.trajectory_influence(problem, run, X_TEST, Y_TEST, progress=False)
        assert rel_err(influence, reference) > 1e-4, name


@pytest.mark.parametrize("name", ["friendly", "schedule", "gsam_schedule", "friendly_every_schedule",
                                  "fisher", "every", "gnp_unit", "mask_asam"])
def test_rho_hypergradient_equals_rerunning(name):
    """d θ_T/dρ along the schedule scaled with its peak: ρ_t → ρ_t (1 + h/max ρ), central differences."""
    problem, run = _run(name, OPTIMIZERS["sgd"](), 5)
    sensitivity = refsam.trajectory_hyperparameter_sensitivity(problem, run, progress=False)
    config, h = VARIANTS[name], 1e-5
    peak = float(np.max(config["rho"]))
    ends = []
    for sign in (1, -1):
        rho = np.asarray(config["rho"]) * (1 + sign * h / peak)
        sam = SAM(**{**config, "rho": rho if np.ndim(rho) else float(rho)})
        ends.append(refsam.replay(problem, _with_sam(run, sam), progress=False).theta_final)
    fd = (ends[0] - ends[1]) / (2 * h)
    assert np.abs(fd).max() > 1e-6
    assert rel_err(sensitivity.d_rho, fd) <= RTOL_TRAJECTORY_FD


def _with_sam(run, sam):
    config = {key: value for key, value in run.config.items() if key not in SAM(0.1).config()
              and key not in ("norm_eps", "t_mask", "m_sharpness", "fisher_eta", "sigma", "ema", "direction",
                              "alpha", "unit_gradient", "perturb_mask", "every")}
    return refsam.Trajectory(run.thetas, run.epsilons, run.batches, run.lrs, run.weights,
                             {**config, **sam.config()}, states=run.states, grad_norms=run.grad_norms)


# -- 4. fixed points ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", WITH_ROOT)
def test_closed_form_equals_resolved_finite_differences(name):
    problem = _problem()
    # ASAM with κ = 0 (T = |θ|) settles too slowly for a 400-step warm start of the root solver: κ = 0.1
    sam = SAM(**{**VARIANTS[name], "kappa": 0.1} if name == "mask_asam" else VARIANTS[name])
    optimizer = refsam.SGD(0.05, weight_decay=0.05)
    # the unit-gradient mix keeps a term of size 1 − α where ‖g‖ stays away from 0: it settles slowly
    run = refsam.train(problem, sam, optimizer, 2000 if name == "gnp_unit" else 400, seed=1, progress=False)
    root = refsam.solve_fixed_point(problem, sam, run.theta_final, optimizer=optimizer)
    assert root.converged
    # the stability diagnostic: the spectral radius of the step map I − η J at the root
    J = residual_jacobian(problem, sam, root.theta, optimizer=optimizer)
    radius = np.abs(np.linalg.eigvals(np.eye(D) - 0.05 * J)).max()
    assert abs(root.spectral_radius - radius) <= 1e-12 and root.stable == (radius < 1)
    closed = refsam.hessian_influence(problem, sam, root, X_TEST, Y_TEST)
    # central differences at h and h/2, Richardson-extrapolated: the unit-gradient mix has a large third
    # derivative in w, and its central difference at h = 1e-4 is 2.3e-6 off, 5.6e-7 at h/2 (truncation,
    # O(h²)); the extrapolation (4 fd(h/2) − fd(h))/3 removes that term for every variant
    fd_h = finite_difference_influence(problem, sam, root, X_TEST, Y_TEST, h=FD_STEP)
    fd = (4 * finite_difference_influence(problem, sam, root, X_TEST, Y_TEST, h=FD_STEP / 2) - fd_h) / 3
    assert np.abs(fd).max() > 1e-6
    assert rel_err(closed, fd) <= RTOL_CLOSED_FORM_FD
    matrix_free = refsam.hessian_influence(problem, sam, root, X_TEST, Y_TEST, solver="gmres")
    assert rel_err(matrix_free, closed) <= 1e-8


@pytest.mark.parametrize("name", ["fisher", "gsam_sam", "gnp", "mask_sam"])
def test_closed_form_hypergradients_equal_re_solving(name):
    """dθ̂/dρ and dθ̂/dλ₂ at the root vs central differences of re-solved roots at ρ ± h and λ₂ ± h,
    Richardson-extrapolated from h = 1e-5 and h/2 (at the GNP root that training reaches, the plain central
    difference in λ₂ is 1.6e-6 off at h = 1e-5: truncation, O(h²))."""
    problem = _problem(l2=1e-3)
    config = VARIANTS[name]
    optimizer = refsam.SGD(0.05, weight_decay=0.05)
    run = refsam.train(problem, SAM(**config), optimizer, 400, seed=1, progress=False)
    root = refsam.solve_fixed_point(problem, SAM(**config), run.theta_final, optimizer=optimizer)
    sens = refsam.hyperparameter_sensitivity(problem, SAM(**config), root)
    h = 1e-5

    def resolved(rho_shift=0.0, l2_shift=0.0):
        shifted = refsam.Problem(MLP, X3, y3, l2=1e-3 + l2_shift)
        sam = SAM(**{**config, "rho": config["rho"] + rho_shift})
        return refsam.solve_fixed_point(shifted, sam, root.theta, optimizer=optimizer, tol=1e-13).theta

    def central(step, **shift):
        name = next(iter(shift))
        return (resolved(**{name: step}) - resolved(**{name: -step})) / (2 * step)

    fd_rho = (4 * central(h / 2, rho_shift=1) - central(h, rho_shift=1)) / 3
    fd_l2 = (4 * central(h / 2, l2_shift=1) - central(h, l2_shift=1)) / 3
    assert np.abs(fd_rho).max() > 0.1 and np.abs(fd_l2).max() > 1.0
    assert rel_err(sens.d_rho, fd_rho) <= RTOL_CLOSED_FORM_FD
    assert rel_err(sens.d_l2, fd_l2) <= RTOL_CLOSED_FORM_FD


@pytest.mark.parametrize("name", sorted(NO_ROOT))
def test_rules_without_one_step_map_say_so(name):
    problem = _problem()
    sam = SAM(**VARIANTS[name])
    theta = np.zeros(D) + 0.1
    with pytest.raises(NoStepMapError, match=NO_ROOT[name]):
        refsam.solve_fixed_point(problem, sam, theta, optimizer=refsam.SGD(0.1, weight_decay=0.05))
    with pytest.raises(NoStepMapError, match=NO_ROOT[name]):
        refsam.hessian_influence(problem, sam, theta, X_TEST, Y_TEST)


def test_a_constant_schedule_has_the_fixed_point_of_its_constant_rule():
    problem = _problem()
    optimizer = refsam.SGD(0.1, weight_decay=0.05)
    run = refsam.train(problem, SAM(0.05), optimizer, 200, seed=1, progress=False)
    a = refsam.solve_fixed_point(problem, SAM(0.05), run.theta_final, optimizer=optimizer)
    b = refsam.solve_fixed_point(problem, SAM(np.full(200, 0.05)), run.theta_final, optimizer=optimizer)
    assert np.array_equal(a.theta, b.theta)


# -- 5. configuration ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_configurations_round_trip_through_a_saved_run(name, tmp_path):
    problem, run = _run(name, OPTIMIZERS["sgd"](), 5)
    path = tmp_path / "run.npz"
    run.save(path)
    loaded = refsam.Trajectory.load(path)
    assert loaded.sam().config() == run.sam().config() == SAM(**VARIANTS[name]).config()
    assert loaded.verify(problem).max_residual == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(rule="sam", fisher_eta=1.0), "`fisher_eta` applies to rule='fisher' only"),
    (dict(rule="sam", sigma=1.0), "`sigma` applies to rule='friendly' only"),
    (dict(rule="friendly", ema=1.0), r"`ema` must be in \[0, 1\)"),
    (dict(direction="gsam"), "direction='gsam' needs `alpha`"),
    (dict(alpha=0.5), "`alpha` applies to direction='gsam' or 'gnp' only"),
    (dict(direction="gsam", alpha=0.5, unit_gradient=True), "`unit_gradient` applies to direction='gnp'"),
    (dict(direction="sideways", alpha=0.5), "`direction` must be one of"),
    (dict(every=0), "`every` must be an int >= 1"),
    (dict(perturb_mask=[1, 0]), "`perturb_mask` must be a 1-d bool array"),
    (dict(rho=[0.1, -0.1]), "`rho` schedule must hold finite numbers >= 0"),
    (dict(rho=[[0.1]]), "`rho` must be a number >= 0 or a non-empty 1-d array"),
    (dict(rule="friendly", m_sharpness=2), "`m_sharpness` composes with direction='sam' and the stateless"),
])
def test_bad_variant_arguments_are_refused_with_one_line(kwargs, message):
    kwargs = {"rho": 0.1, **kwargs}
    with pytest.raises(refsam.InvalidInputError, match=message):
        SAM(**kwargs)


def test_a_schedule_of_the_wrong_length_and_a_wrong_mask_are_refused():
    problem = _problem()
    with pytest.raises(refsam.InvalidInputError, match="the ρ schedule `rho` has 3 entries, the run has 8"):
        refsam.train(problem, SAM([0.1, 0.1, 0.1]), refsam.SGD(0.1), STEPS, progress=False)
    with pytest.raises(refsam.InvalidInputError, match="`perturb_mask` has 2 entries, the parameters have"):
        refsam.train(problem, SAM(0.1, perturb_mask=[True, False]), refsam.SGD(0.1), STEPS, progress=False)
    with pytest.raises(refsam.InvalidInputError, match=r"take the rule of step t with sam.at_step\(t\)"):
        SAM(0.1, every=2).perturbation(np.ones(3), np.ones(3))


# -- 6. properties over random problems and scales -----------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["fisher", "friendly", "gsam", "gnp_unit", "mask_asam", "every"]),
       st.integers(0, 2**16), st.sampled_from([1e-3, 1.0, 1e2]))
def test_adjoint_equals_autodiff_over_random_problems_and_scales(name, seed, scale):
    """Random data at rescaled feature scales, random batches: the MLP sees inputs from 1e-3 to 1e2
    (beyond, autograd's own VJP of tanh, 1/cosh², overflows inside the oracle)."""
    rng = np.random.default_rng(seed)
    X = scale * rng.normal(size=(10, 3))
    y = rng.integers(0, 3, size=10)
    problem = refsam.Problem(MLP, X, y, l2=1e-3)
    config = dict(VARIANTS[name])
    if name == "fisher":
        config["fisher_eta"] = float(rng.uniform(0.1, 10.0))
    run = refsam.train(problem, SAM(**config), refsam.SGD(0.05 / max(1.0, scale), momentum=0.5), 5,
                       batch_size=4, seed=seed, progress=False)
    adjoint = refsam.trajectory_influence(problem, run, X[:2], y[:2], progress=False)
    auto = refsam.trajectory_influence(problem, run, X[:2], y[:2], "autodiff")
    assert rel_err(adjoint, auto) <= RTOL_EXACT_METHODS


def test_fisher_is_exact_at_extreme_gradient_scales():
    """f = 1 + η g² overflows for |g| > 1e154: the limits are taken there, and ε stays exact."""
    sam = SAM(0.1, "fisher", fisher_eta=1.0)
    g = np.array([1e200, -3e180, 2.0])
    eps = sam.perturbation(np.zeros(3), g)
    # h = g/f → 1/(ηg) for the huge entries; 2/(1+4) for the last; the norm of r = g/√f → (1, 1, 2/√5)
    h = np.array([1e-200, -1 / 3e180, 2 / 5])
    assert rel_err(eps, 0.1 * h / np.sqrt(2 + 4 / 5)) <= 1e-14
    assert np.all(np.isfinite(sam.jvp_g(np.zeros(3), g, np.eye(3))))
    # a tiny gradient: q·n underflows at ‖g‖ ~ 1e-160, the factors of ∂ε/∂g are kept bounded (fuzz suite)
    tiny = 1e-200 * np.array([1.0, -3.0, 2.0])
    auto = autograd.jacobian(lambda x: sam.perturbation(np.zeros(3), x))(tiny)
    assert np.all(np.isfinite(auto)) and rel_err(sam.jacobian_g(np.zeros(3), tiny), auto) <= 1e-14
    assert rel_err(sam.vjp_g(np.zeros(3), tiny, np.eye(3)), auto.T) <= 1e-14


def test_anp_direction_is_differentiable_in_blocks():
    """`descent` runs on blocks (d, K), column by column (block replays of a bank)."""
    sam = SAM(0.1, direction="gsam", alpha=0.4)
    G, P = np.random.default_rng(1).normal(size=(2, D, 3))
    block = sam.descent(G, P)
    for k in range(3):
        assert rel_err(block[:, k], sam.descent(G[:, k], P[:, k])) <= 1e-15
    assert anp is not None


@pytest.mark.parametrize("name", ["friendly_every_schedule", "gsam", "fisher", "mask_asam", "gnp_unit"])
def test_block_replays_equal_one_run_at_a_time(name):
    """The counterfactual bank's block replays (K runs as one (d, K) block) carry the variants: the rule's
    state per column, the direction and Fisher SAM column by column, the mask on blocks."""
    problem, run = _run(name, OPTIMIZERS["sgd"](), 5)
    W = np.ones((3, problem.n))
    W[0, 2] = W[1, [4, 7]] = W[2, 9] = 0.0
    block = refsam.training.replay_final(problem, run, W)
    for k in range(3):
        single = refsam.replay(problem, run, W[k], progress=False).theta_final
        assert rel_err(block[k], single) <= 1e-12
    assert rel_err(block[0], run.theta_final) > 1e-6  # the weights changed the runs


def test_gsam_is_differentiable_where_g_or_g_p_vanishes():
    """GSAM's c = ⟨g, g^p⟩‖g‖/((‖g^p‖‖g‖ + e)(‖g^p‖ + e)) is O(‖g‖²/e) at g = 0, with gradient 0 there, and
    at g^p = 0 its gradient in g^p is ‖g‖ g/e² (e = 1e-12 > 0): the hand Jacobians there equal autograd's
    (found by the fuzz suite: they raised ZeroGradientError on a ρ = 0 run whose gradient vanished).
    Central differences cannot check this: c's curvature is ~1/e, so no step resolves it in float64."""
    sam = SAM(0.1, direction="gsam", alpha=0.4)
    rng = np.random.default_rng(2)
    eye, zero = np.eye(4), np.zeros((4, 4))
    for g, g_p in ((np.zeros(4), rng.normal(size=4)), (rng.normal(size=4), np.zeros(4))):
        auto_g = autograd.jacobian(lambda x, g_p=g_p: sam.descent(x, g_p))(g)
        auto_p = autograd.jacobian(lambda x, g=g: sam.descent(g, x))(g_p)
        assert np.all(np.isfinite(auto_g)) and np.all(np.isfinite(auto_p))
        assert rel_err(sam.descent_jvp(g, g_p, eye, zero), auto_g) <= RTOL_DERIVATIVE
        assert rel_err(sam.descent_jvp(g, g_p, zero, eye), auto_p) <= RTOL_DERIVATIVE
        vjp_g, vjp_p = sam.descent_vjp(g, g_p, eye)
        assert rel_err(vjp_g, auto_g.T) <= RTOL_DERIVATIVE and rel_err(vjp_p, auto_p.T) <= RTOL_DERIVATIVE


def test_unit_gradient_and_fisher_at_a_zero_gradient():
    """The unit-gradient mix is undefined at g = 0 (ZeroGradientError, as SAM's ε); Fisher SAM with e > 0 has
    ε = ρ h/e there and the autodiff oracle's formula agrees (it divided 0 by sqrt'(0) = ∞ before)."""
    with pytest.raises(refsam.ZeroGradientError, match="unit-gradient mix"):
        SAM(0.1, direction="gnp", alpha=0.5, unit_gradient=True).descent(np.zeros(3), np.ones(3))
    sam = SAM(0.1, "fisher", norm_eps=1e-12)
    auto = autograd.jacobian(lambda x: sam.perturbation(np.zeros(3), x))(np.zeros(3))
    assert rel_err(auto, sam.jacobian_g(np.zeros(3), np.zeros(3))) <= 1e-15
    assert rel_err(auto, 0.1 / 1e-12 * np.eye(3)) <= 1e-15


# -- found by this session's review -----------------------------------------------------------------------

def test_removed_batches_in_block_replays_of_a_direction_undefined_at_zero():
    """A bank's replay whose batch is entirely removed has g = g^p = 0 there (no L2 in the loss): the
    unit-gradient mix, undefined at g = 0, must give g̃ = 0 like every direction (it raised before)."""
    problem = _problem(l2=0.0)
    sam = SAM(0.05, direction="gnp", alpha=0.8, unit_gradient=True)
    run = refsam.train(problem, sam, OPTIMIZERS["sgd"](), STEPS, batch_size=2, seed=2, progress=False)
    W = np.ones((2, problem.n))
    W[1, run.batches[3]] = 0.0  # step 3's batch removed from run 1
    block = refsam.training.replay_final(problem, run, W, removed_batches=True)
    assert rel_err(block[0], run.theta_final) <= 1e-12
    # the same as a run whose step 3 is a plain step (ρ_3 = 0): F ≡ 0 on that batch either way
    rhos = np.full(STEPS, 0.05)
    rhos[3] = 0.0
    plain = _with_sam(run, SAM(rhos, direction="gnp", alpha=0.8, unit_gradient=True))
    expected = refsam.training.replay_final(problem, plain, W[1:])[0]
    assert rel_err(block[1], expected) <= 1e-12 and rel_err(block[1], run.theta_final) > 1e-6


def test_rho_zero_is_plain_sgd_for_every_direction():
    """ρ = 0 reduces every rule and direction to the base optimizer exactly (the gradient-norm penalty's code
    treats r = 0 as plain training); before, the unit-gradient mix still formed (1 − α) g/‖g‖ + α g."""
    problem = _problem()
    plain = refsam.train(problem, SAM(0.0), OPTIMIZERS["sgd"](), STEPS, batch_size=5, seed=2, progress=False)
    for kwargs in (dict(direction="gnp", alpha=0.8, unit_gradient=True), dict(direction="gsam", alpha=0.4),
                   dict(direction="gnp", alpha=0.3)):
        run = refsam.train(problem, SAM(0.0, **kwargs), OPTIMIZERS["sgd"](), STEPS, batch_size=5, seed=2,
                           progress=False)
        assert np.array_equal(run.thetas, plain.thetas), kwargs
        one = refsam.train(problem, SAM(0.0, **kwargs), refsam.SGD(0.1), 1, seed=2, progress=False)
        first = refsam.trajectory_influence(problem, one, X_TEST, Y_TEST, "first_order", progress=False)
        exact = refsam.trajectory_influence(problem, one, X_TEST, Y_TEST, progress=False)
        assert rel_err(first, exact) <= 1e-12  # T = 1, ρ = 0: first_order is exact (trajectory.py)


def test_interval_one_is_sam_and_has_its_fixed_point():
    """every=1 (composer-sam's default) is SAM at every step: the same run, and the same root."""
    problem = _problem()
    optimizer = refsam.SGD(0.05, weight_decay=0.05)
    a = refsam.train(problem, SAM(0.05), optimizer, 50, seed=1, progress=False)
    b = refsam.train(problem, SAM(0.05, every=1), optimizer, 50, seed=1, progress=False)
    assert np.array_equal(a.thetas, b.thetas)
    root_a = refsam.solve_fixed_point(problem, SAM(0.05), a.theta_final, optimizer=optimizer)
    root_b = refsam.solve_fixed_point(problem, SAM(0.05, every=1), a.theta_final, optimizer=optimizer)
    assert np.array_equal(root_a.theta, root_b.theta)


def test_the_rule_of_a_step_is_its_own_rule_of_that_step():
    """at_step is idempotent: a user who passes sam.at_step(t) where the run's rule is expected gets the
    same step (Friendly SAM's first SAM step with an interval was reset to the plain step's phase)."""
    sam = SAM(0.1, "friendly", every=3)
    for t in range(7):
        rule = sam.at_step(t)
        again = rule.at_step(t)
        assert (again.phase, again.rho) == (rule.phase, rule.rho), t
    assert [sam.at_step(t).phase for t in range(6)] == ["plain", "plain", "first", "plain", "plain", "sam"]


def test_friendly_sam_warns_where_its_input_cancels():
    """Friendly SAM normalises u = g − σm, not g: a step whose u is round-off (θ barely moves, σ = 1) must
    warn like a cancelled g does (the check read ‖g‖ before, which stays large)."""
    problem = _problem()
    run = refsam.train(problem, SAM(0.05, "friendly", sigma=1.0, ema=0.0), refsam.SGD(1e-13), 3, seed=1,
                       progress=False)
    with pytest.warns(RuntimeWarning, match="cancellation"):
        refsam.trajectory_influence(problem, run, X_TEST, Y_TEST, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(every=2.5), r"`every` must be an int >= 1, got 2.5"),
    (dict(every=True), r"`every` must be an int >= 1, got True"),
])
def test_preset_keywords_are_checked_like_sam_s(kwargs, message):
    with pytest.raises(refsam.InvalidInputError, match=message):
        refsam.training.preset("composer-sam", _problem(l2=0.0), 0.05, 0.1, 0.01, **kwargs)
    with pytest.raises(refsam.InvalidInputError, match=r"`alpha` must be a finite real number, got True"):
        refsam.training.preset("gsam", _problem(l2=0.0), 0.05, 0.1, 0.01, alpha=True)


def test_the_unit_gradient_mix_warns_where_g_cancels():
    """(1 − α) g/‖g‖ amplifies a round-off g by ‖terms‖/‖g‖ like SAM's ε does: a USAM run (whose rule never
    normalises) with the unit-gradient mix warns where the batch gradient cancels (found by the fuzz suite:
    adjoint and autodiff 1e21 apart, of opposite signs, at a g of round-off size)."""
    X = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    y = np.array([1, 0, 0, 1])
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)  # θ = 0: the four gradients cancel exactly
    theta0 = np.array([1e-9, 0.0])  # g ~ 1e-10 of terms ~ 0.5: below CANCEL_WARN = 1e-6
    run = refsam.train(problem, SAM(0.05, "usam", direction="gnp", alpha=0.5, unit_gradient=True),
                       refsam.SGD(0.1), 1, theta0=theta0, progress=False)
    with pytest.warns(RuntimeWarning, match="cancellation"):
        refsam.trajectory_influence(problem, run, X, y, progress=False)


def test_directions_at_extreme_gradient_scales():
    """The unit-gradient mix and GSAM's norms are taken of g/max|g|: g·g underflows for ‖g‖ < 1e-154 and
    overflows above 1e154 (found by the fuzz suite: the oracle's unit mix of a g ~ 1e-87 was off by 1e68)."""
    v = np.array([3.0, -4.0, 0.0])
    for scale in (1e-170, 1.0, 1e170):
        g = scale * v
        unit = SAM(0.1, direction="gnp", alpha=0.0, unit_gradient=True).descent(g, np.zeros(3))
        assert rel_err(unit, v / 5.0) <= 1e-15
        auto = autograd.jacobian(lambda x: SAM(0.1, direction="gnp", alpha=0.0,
                                               unit_gradient=True).descent(x, np.zeros(3)))(g)
        assert np.all(np.isfinite(auto))
        assert rel_err(auto * scale, (np.eye(3) - np.outer(v, v) / 25) / 5) <= 1e-14


def test_the_unit_gradient_mix_warns_on_a_batch_of_tiny_weights():
    """g/‖g‖ does not scale with the weights, so a batch whose weights are tiny (1e-86) carries the rounding
    of ∂g/∂w_j = ∇ℓ_j/|B| amplified by 1/‖g‖ ~ 1/w_j: refsam warns there (the fuzz suite's case: adjoint
    and autodiff 30% apart, each of size 1e67, where the derivative is 0)."""
    X = np.ones((4, 1))
    y = np.zeros(4, dtype=int)
    weights = np.array([1.0, 1.0, 1.0, 1.8e-86])
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, weights=weights)
    run = refsam.train(problem, SAM(0.25, "asam", kappa=0.0, direction="gnp", alpha=0.0, unit_gradient=True),
                       refsam.SGD(0.5), batches=[[0], [1], [3]], theta0=np.array([0.1, -0.2]), progress=False)
    with pytest.warns(RuntimeWarning, match="cancellation"):
        refsam.trajectory_influence(problem, run, X[:2], y[:2], progress=False)
