"""Block replays: K counterfactual runs advanced together as one (d, K) block — the linear models'
column_grads (two matrix products for all runs), the MLP's column loop — equal K separate replays to
the rounding of a matrix product (RTOL_REORDERED), for every rule, mode, momentum, m-sharpness and
per-coordinate λ; the ground truth built on them equals replaying one point at a time."""

import numpy as np
import pytest

import refsam
from refsam.errors import InvalidInputError
from refsam.ground_truth import finite_difference_replay, leave_one_out_replay
from refsam.tolerances import RTOL_REORDERED, rel_err
from refsam.training import replay_final

X, Y, _ = refsam.make_gaussian_classification(n=48, n_features=4, n_classes=3, seed=0)
MODELS = {"logistic": (refsam.LogisticRegression(), (Y > 0).astype(int)),
          "softmax": (refsam.SoftmaxRegression(3, label_smoothing=0.1), Y),
          "mlp": (refsam.MLP([4, 5, 3], activation="tanh"), Y)}
CONFIGS = [  # (rule, the SGD's momentum settings, where λ sits: the optimizer's or the loss's l2, λ)
    (refsam.SAM(0.05), {}, "weight_decay", 0.05),
    (refsam.SAM(0.05, "asam", kappa=0.0, norm_eps=1e-12), {"momentum": 0.9}, "l2", 0.05),
    (refsam.SAM(0.05, m_sharpness=4), {"momentum": 0.9, "nesterov": True}, "weight_decay", "per-coordinate"),
    (refsam.SAM(0.1, "usam"), {"momentum": 0.5, "dampening": 0.2}, "l2", 0.0),
]


def _problem_and_sgd(model, y, lr, penalty, decay, **momentum):
    """λ = ``decay`` as SGD's weight decay (0.1's "decoupled") or as the loss's l2 (0.1's "coupled")."""
    on_loss = penalty == "l2"
    problem = refsam.Problem(model, X, y, l2=decay if on_loss else 0.0)
    return problem, refsam.SGD(lr, weight_decay=0.0 if on_loss else decay, **momentum)


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("config", range(len(CONFIGS)))
def test_a_block_of_runs_equals_the_runs_one_at_a_time(model_name, config):
    model, y = MODELS[model_name]
    sam, momentum, penalty, decay = CONFIGS[config]
    if decay == "per-coordinate":
        decay = np.linspace(0.0, 0.1, model.n_params(4))
    problem, optimizer = _problem_and_sgd(model, y, 0.3, penalty, decay, **momentum)
    run = refsam.train(problem, sam, optimizer, 25, batch_size=16, seed=1)
    weights = np.ones((6, problem.n))
    weights[np.arange(6), [0, 3, 7, 11, 30, 47]] = 0.0
    weights[2, 5], weights[4] = 0.3, np.linspace(0.5, 1.5, problem.n)
    block = replay_final(problem, run, weights)
    one_at_a_time = np.array([refsam.replay(problem, run, weights=w).theta_final for w in weights])
    assert block.shape == (6, problem.d)
    assert np.ptp(block, axis=0).max() > 1e-6  # the runs differ
    assert rel_err(block, one_at_a_time) <= RTOL_REORDERED


def test_block_ground_truth_equals_replaying_one_point_at_a_time():
    problem = refsam.Problem(refsam.LogisticRegression(), X[:40], (Y[:40] > 0).astype(int))
    run = refsam.train(problem, refsam.SAM(0.05), refsam.SGD(0.5, weight_decay=0.05), 30, batch_size=10,
                       seed=2)
    X_test, y_test = X[40:], (Y[40:] > 0).astype(int)
    base = problem.model.losses(run.theta_final, X_test, y_test)
    expected = []
    for j in range(problem.n):
        w = np.ones(problem.n)
        w[j] = 0.0
        expected.append(problem.model.losses(refsam.replay(problem, run, weights=w).theta_final,
                                             X_test, y_test) - base)
    assert rel_err(leave_one_out_replay(problem, run, X_test, y_test), np.array(expected)) <= RTOL_REORDERED
    h = 1e-4
    j = 17
    plus, minus = np.ones(problem.n), np.ones(problem.n)
    plus[j], minus[j] = 1 + h, 1 - h
    central = (problem.model.losses(refsam.replay(problem, run, weights=plus).theta_final, X_test, y_test)
               - problem.model.losses(refsam.replay(problem, run, weights=minus).theta_final, X_test, y_test)
               ) / (2 * h)
    fd = finite_difference_replay(problem, run, X_test, y_test, indices=[j], h=h)[0]
    assert rel_err(fd, central) <= 1e-10  # the difference quotient amplifies the products' rounding by 1/h


@pytest.mark.parametrize("weights, message", [
    (np.ones(48), r"`weights` must be 2-dimensional"),
    (np.ones((2, 5)), r"`weights` must have shape \(K >= 1, 48\)"),
    (-np.ones((2, 48)), r"`weights` must be >= 0"),
    (np.full((2, 48), np.nan), r"`weights` must contain only finite"),
])
def test_replay_final_refuses_bad_weights(weights, message):
    problem = refsam.Problem(refsam.SoftmaxRegression(3), X, Y)
    run = refsam.train(problem, refsam.SAM(0.05), refsam.SGD(0.3, weight_decay=0.05), 3)
    with pytest.raises(InvalidInputError, match=message):
        replay_final(problem, run, weights)
