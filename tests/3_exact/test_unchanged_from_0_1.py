"""0.2 moved the optimizer into an object and the step's Jacobians into one place; the numbers must not
move. tests/data/influence_0_1.npz holds what refsam 0.1.x (commit 1e182ee, the last 0.1 release on main)
computed for the same runs — written by that code, not by the code under test — with the 0.1 API:

* ``Problem(weight_decay=λ)`` (0.1's "decoupled" mode)  ==  ``SGD(..., weight_decay=λ)`` in 0.2;
* ``Problem(weight_decay=λ, regularization="coupled")`` ==  ``Problem(l2=λ)`` with an SGD without decay;
* ``train(problem, sam, lr, T, batch_size=, seed=, momentum=, dampening=, nesterov=)`` == ``train(problem,
  sam, SGD(lr, momentum, dampening, nesterov, weight_decay), T, batch_size=, seed=)``.

Training is the same arithmetic in the same order, so θ_T must agree bit for bit — except with m-sharpness,
where 0.1 started the chunk sum from λθ and 0.2 adds the optimizer's λθ after it (d = Σ_C s_C g̃_C + λθ):
one reordered addition per step, 4.8e-14 relative after 30 steps (RTOL_REORDERED_RUN). The exact influences
are the same equations, now evaluated by training.linearised.SAMStep instead of five hand-written copies:
equal to a few ulps of accumulated reordering (RTOL_EXACT_METHODS is the ladder's own bound).
"""

from pathlib import Path

import numpy as np
import pytest

import refsam
from refsam.tolerances import RTOL_EXACT_METHODS, RTOL_REORDERED_RUN, rel_err

REFERENCE = np.load(Path(__file__).parent.parent / "data" / "influence_0_1.npz")
LR = 0.05 * (1.0 - 0.5 * np.arange(30) / 30)  # the schedule the 0.1 runs used

X3, y3, _ = refsam.make_gaussian_classification(n=24, n_features=3, n_classes=3, seed=5)
X2, y2, _ = refsam.make_gaussian_classification(n=24, n_features=3, seed=6)

# name: (model, data, Problem keywords, SAM keywords, SGD keywords, batch size) in 0.2's terms
CASES = {
    "logistic_nesterov_wd_sam": (refsam.LogisticRegression(), (X2, y2), {},
                                 dict(rho=0.05, rule="sam", norm_eps=1e-12),
                                 dict(momentum=0.9, nesterov=True, weight_decay=1e-2), 6),
    "logistic_heavyball_damp_asam": (refsam.LogisticRegression(), (X2, y2), {},
                                     dict(rho=0.3, rule="asam", kappa=0.0, norm_eps=1e-12),
                                     dict(momentum=0.9, dampening=0.3, weight_decay=5e-3), 8),
    "softmax_sgd_coupled_usam": (refsam.SoftmaxRegression(3), (X3, y3), dict(l2=2e-2),
                                 dict(rho=0.1, rule="usam"), {}, 6),
    "mlp_nesterov_wd_sam_msharp": (refsam.MLP((3, 4, 3)), (X3, y3), {},
                                   dict(rho=0.05, rule="sam", m_sharpness=3),
                                   dict(momentum=0.9, nesterov=True, weight_decay=1e-2), 6),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_run_and_its_exact_influence_are_unchanged_from_0_1(name):
    model, (X, y), problem_kw, sam_kw, sgd_kw, batch_size = CASES[name]
    problem = refsam.Problem(model, X, y, **problem_kw)
    trajectory = refsam.train(problem, refsam.SAM(**sam_kw), refsam.SGD(LR, **sgd_kw), 30,
                              batch_size=batch_size, seed=3)
    if "m_sharpness" in sam_kw:
        assert rel_err(trajectory.theta_final, REFERENCE[f"{name}/theta_final"]) <= RTOL_REORDERED_RUN
    else:
        np.testing.assert_array_equal(trajectory.theta_final, REFERENCE[f"{name}/theta_final"])
    X_test, y_test = X[:4] + 0.1, y[:4]
    influence = refsam.trajectory_influence(problem, trajectory, X_test, y_test, "adjoint")
    assert np.abs(influence).max() > 1e-6  # not a trivially zero comparison
    assert rel_err(influence, REFERENCE[f"{name}/influence"]) <= RTOL_EXACT_METHODS
    parameters = refsam.trajectory_parameter_influence(problem, trajectory, "forward")
    assert rel_err(parameters, REFERENCE[f"{name}/parameters"]) <= RTOL_EXACT_METHODS
    if "l2" not in problem_kw:  # 0.1's d_weight_decay was the derivative in λ of the mode in use
        sensitivity = refsam.trajectory_hyperparameter_sensitivity(problem, trajectory)
        assert rel_err(sensitivity.d_rho, REFERENCE[f"{name}/d_rho"]) <= RTOL_EXACT_METHODS
        assert rel_err(sensitivity.d_weight_decay, REFERENCE[f"{name}/d_weight_decay"]) <= RTOL_EXACT_METHODS


def test_closed_form_at_a_root_is_unchanged_from_0_1():
    problem = refsam.Problem(refsam.LogisticRegression(), X2, y2)
    sam, optimizer = refsam.SAM(0.05), refsam.SGD(0.3, weight_decay=1e-2)
    trajectory = refsam.train(problem, sam, optimizer, 400)
    root = refsam.solve_fixed_point(problem, sam, trajectory.theta_final, optimizer=optimizer)
    assert rel_err(root.theta, REFERENCE["root/theta_hat"]) <= 1e-13  # the same Newton iterates
    X_test, y_test = X2[:4] + 0.1, y2[:4]
    for variant in ("full", "frozen", "erm"):
        influence = refsam.hessian_influence(problem, sam, root, X_test, y_test, variant=variant)
        assert rel_err(influence, REFERENCE[f"root/closed_form_{variant}"]) <= RTOL_EXACT_METHODS, variant
    sensitivity = refsam.hyperparameter_sensitivity(problem, sam, root)
    assert rel_err(sensitivity.d_rho, REFERENCE["root/d_rho"]) <= RTOL_EXACT_METHODS
    assert rel_err(sensitivity.d_weight_decay, REFERENCE["root/d_weight_decay"]) <= RTOL_EXACT_METHODS
