"""Fixed points of full-batch Adam and AdamW under SAM, and the closed form at them.

* Adam with L2 (torch.optim.Adam(weight_decay=λ)) stops where m̂ = 0, i.e. a = g̃ + λθ = 0: SGD's root, so
  the closed form applies unchanged — proved here by a long run that reaches it, whose exact trajectory
  influence equals the closed form.
* AdamW's stationary step vanishes where a/(|a| + eps) + λθ = 0 (a = g̃): another root, with J = D M + λI,
  D = eps/(|a| + eps)². Its closed form must equal finite differences of re-solving that root, and a run
  that reaches it (β₂ = 0.99 here; with torch's β₂ = 0.999 the second moment adapts over ~1/(1 − β₂) steps
  and the same run is still 1.6e-2 away after 6000 steps) must give the same influence through the run.
"""

import numpy as np
import pytest

import refsam
from refsam.tolerances import ATOL_SAME_POINT, RTOL_CLOSED_FORM_FD, RTOL_EXACT_METHODS, rel_err

X, y, _ = refsam.make_gaussian_classification(n=40, n_features=3, seed=2)
X_TEST, Y_TEST = X[:3] + 0.1, y[:3]
PROBLEM = refsam.Problem(refsam.LogisticRegression(), X, y)
SAM = refsam.SAM(0.05)


def _reached_root(optimizer, steps):
    run = refsam.train(PROBLEM, SAM, optimizer, steps)
    root = refsam.solve_fixed_point(PROBLEM, SAM, run.theta_final, optimizer=optimizer)
    assert root.converged and np.max(np.abs(run.theta_final - root.theta)) <= ATOL_SAME_POINT
    return run, root


def test_adam_with_l2_has_sgds_root_and_its_closed_form():
    adam = refsam.Adam(0.02, eps=1e-2, weight_decay=0.05)
    run, root = _reached_root(adam, 2000)
    sgd = refsam.SGD(0.5, weight_decay=0.05)
    sgd_root = refsam.solve_fixed_point(PROBLEM, SAM, run.theta_final, optimizer=sgd)
    assert rel_err(root.theta, sgd_root.theta) <= 1e-12  # the same root G = g̃ + λθ = 0
    closed = refsam.hessian_influence(PROBLEM, SAM, root, X_TEST, Y_TEST)
    through_run = refsam.trajectory_influence(PROBLEM, run, X_TEST, Y_TEST)
    assert rel_err(through_run, closed) <= RTOL_EXACT_METHODS
    assert root.spectral_radius is None  # the momentum-SGD stability diagnostic does not apply to Adam


def test_adamw_fixed_point_closed_form_matches_resolving_and_the_run_that_reaches_it():
    adamw = refsam.AdamW(0.02, betas=(0.9, 0.99), eps=1e-2, weight_decay=0.05)
    run, root = _reached_root(adamw, 4000)
    G = refsam.residual_map(PROBLEM, SAM, root.theta, optimizer=adamw)
    assert np.linalg.norm(G) <= 1e-12
    sgd_residual = refsam.residual_map(PROBLEM, SAM, root.theta, optimizer=refsam.SGD(1.0, weight_decay=0.05))
    assert np.linalg.norm(sgd_residual) > 1e-3  # not SGD's root: AdamW's fixed point is its own
    closed = refsam.hessian_influence(PROBLEM, SAM, root, X_TEST, Y_TEST)
    fd = refsam.finite_difference_influence(PROBLEM, SAM, root, X_TEST, Y_TEST)
    assert rel_err(closed, fd) <= RTOL_CLOSED_FORM_FD
    through_run = refsam.trajectory_influence(PROBLEM, run, X_TEST, Y_TEST)
    assert rel_err(through_run, closed) <= RTOL_EXACT_METHODS
    sensitivity = refsam.hyperparameter_sensitivity(PROBLEM, SAM, root)
    h = 1e-5
    roots = [refsam.solve_fixed_point(PROBLEM, SAM, root.theta,
                                      optimizer=adamw.replace(weight_decay=0.05 + s)).theta for s in (h, -h)]
    assert rel_err(sensitivity.d_weight_decay, (roots[0] - roots[1]) / (2 * h)) <= RTOL_CLOSED_FORM_FD


@pytest.mark.parametrize("variant", ["full", "frozen", "erm"])
def test_adamw_matrix_free_products_and_solvers_equal_the_dense_system(variant):
    adamw = refsam.AdamW(0.02, betas=(0.9, 0.99), eps=1e-2, weight_decay=0.05)
    root = refsam.solve_fixed_point(PROBLEM, SAM, refsam.train(PROBLEM, SAM, adamw, 300).theta_final,
                                    optimizer=adamw)
    ops = refsam.system_operators(PROBLEM, SAM, root, variant)
    dense = ops.dense_jacobian()
    if variant == "full":
        assert rel_err(dense, refsam.residual_jacobian(PROBLEM, SAM, root.theta, optimizer=adamw)) <= 1e-13
    V = np.random.default_rng(0).standard_normal((PROBLEM.d, 2))
    assert rel_err(ops.jacobian.matmat(V), dense @ V) <= 1e-13
    assert rel_err(ops.jacobian_T.matmat(V), dense.T @ V) <= 1e-13
    assert not ops.symmetric  # D varies by coordinate: CG must not be offered
    direct = refsam.hessian_influence(PROBLEM, SAM, root, X_TEST, Y_TEST, variant)
    gmres = refsam.hessian_influence(PROBLEM, SAM, root, X_TEST, Y_TEST, variant, solver="gmres", rtol=1e-14)
    assert rel_err(gmres, direct) <= 1e-9
    # CG on this unsymmetric J converged to 30% off (found in review): refused, for every variant
    with pytest.raises(refsam.InvalidInputError, match="AdamW root"):
        refsam.hessian_influence(PROBLEM, SAM, root, X_TEST, Y_TEST, variant, solver="cg")
    # the public ∂G/∂w carries AdamW's D when given the optimizer: −J⁻¹ G_wᵀ is the parameter influence,
    # itself held to finite differences of re-solving above
    if variant == "full":
        J = refsam.residual_jacobian(PROBLEM, SAM, root.theta, optimizer=adamw)
        G_w = refsam.residual_weight_jacobian(PROBLEM, SAM, root.theta, optimizer=adamw)
        expected = refsam.parameter_influence(PROBLEM, SAM, root)
        assert rel_err(-np.linalg.solve(J, G_w.T).T, expected) <= 1e-10


def test_adamw_residual_scale_is_the_derivative_of_its_residual():
    for eps_root in (0.0, 1e-6):
        adamw = refsam.AdamW(eps=1e-3, eps_root=eps_root, weight_decay=0.1)
        scales = np.array([1e-4, 1e-3, 1e-2, 0.1, 1, 10])
        theta, grad = np.random.default_rng(1).standard_normal((2, 6)) * scales
        h = 1e-9
        fd = np.array([(adamw.residual(theta, grad + h * e) - adamw.residual(theta, grad - h * e))[i]
                       / (2 * h) for i, e in enumerate(np.eye(6))])
        assert rel_err(adamw.residual_scale(theta, grad), fd) <= 1e-6
