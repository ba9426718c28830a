"""The base optimizer as an object (contract §6, §9): ``refsam.SGD`` is ``torch.optim.SGD`` to the letter,
its ``jvp`` is the derivative of its ``update`` and its ``vjp`` the transpose of that, it refuses bad
settings by name, and a SAM run on top of it (Nesterov momentum with weight decay) is torch's loop and has
an exact influence equal to autodiff.

Oracles: torch.optim.SGD's ``step`` transliterated by hand (its source's order of operations), central
differences of ``update`` (exact up to rounding: the update is linear in (θ, state, g̃, λ)), the inner
product identity <u, J v> = <Jᵀu, v>, and a hand-written SAM + SGD loop built on ``problem.grad`` only.
"""

import numpy as np
import pytest

import refsam
from refsam import SAM, SGD, InvalidInputError
from refsam.tolerances import rel_err

D = 5  # coordinates of θ in the optimizer-only tests
PER_COORDINATE = np.array([0.0, 0.1, 0.05, 0.0, 0.2])  # λ_i, e.g. none on two "biases"

CONFIGS = {  # name: (momentum, dampening, nesterov, weight_decay)
    "plain": (0.0, 0.0, False, 0.1),
    "heavy_ball": (0.9, 0.0, False, 0.05),
    "nesterov": (0.9, 0.0, True, 0.05),
    "dampened": (0.8, 0.3, False, 0.01),
    "nesterov_dampened": (0.7, 0.2, True, 0.02),
    "per_coordinate_decay": (0.9, 0.1, False, PER_COORDINATE),
    "nesterov_per_coordinate_decay": (0.85, 0.0, True, PER_COORDINATE),
}


def torch_sgd_steps(theta0, grads, lrs, momentum, dampening, nesterov, weight_decay):
    """torch.optim.SGD.step for one parameter tensor, transliterated from its source (foreach=False):

        d_p = p.grad
        if weight_decay != 0: d_p = d_p.add(p, alpha=weight_decay)
        if momentum != 0:
            if buf is None: buf = torch.clone(d_p).detach()
            else: buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
            if nesterov: d_p = d_p.add(buf, alpha=momentum)
            else: d_p = buf
        p.add_(d_p, alpha=-lr)

    Returns θ_0 … θ_T and the buffers after each step (None without momentum)."""
    p, buf = theta0.copy(), None
    thetas, bufs = [p.copy()], []
    for grad, lr in zip(grads, lrs):
        d_p = grad + weight_decay * p if np.any(weight_decay) else grad
        if momentum != 0:
            buf = d_p.copy() if buf is None else buf * momentum + d_p * (1 - dampening)
            d_p = d_p + buf * momentum if nesterov else buf
            bufs.append(buf.copy())
        p = p + d_p * (-lr)
        thetas.append(p.copy())
    return np.array(thetas), (np.array(bufs) if momentum != 0 else None)


def _sgd(name, lr=0.1):
    momentum, dampening, nesterov, weight_decay = CONFIGS[name]
    return SGD(lr, momentum, dampening, nesterov, weight_decay)


# -- (1) update = torch.optim.SGD ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_update_follows_torch_sgd_over_random_steps(name):
    rng = np.random.default_rng(len(name))
    steps = 5
    theta0 = rng.standard_normal(D)
    grads = rng.standard_normal((steps, D))
    lrs = rng.uniform(0.05, 0.5, steps)
    optimizer = _sgd(name, lrs)
    expected_thetas, expected_bufs = torch_sgd_steps(theta0, grads, lrs, *CONFIGS[name])
    theta, state = theta0, optimizer.init_state(theta0)
    assert len(state) == (0 if CONFIGS[name][0] == 0 else 1)
    for t in range(steps):
        theta, state = optimizer.update(t, lrs[t], theta, state, grads[t])
        np.testing.assert_allclose(theta, expected_thetas[t + 1], rtol=1e-15, atol=0)
        if expected_bufs is not None:
            np.testing.assert_allclose(state[0], expected_bufs[t], rtol=1e-15, atol=0)
    assert np.max(np.abs(theta - theta0)) > 1e-2  # the steps move θ
    # the residual is d = g̃ + λθ: what a full-batch fixed point zeroes
    np.testing.assert_allclose(optimizer.residual(theta0, grads[0]),
                               grads[0] + np.asarray(CONFIGS[name][3]) * theta0, rtol=1e-15, atol=0)


def test_zero_momentum_keeps_no_state_and_is_the_plain_step():
    rng = np.random.default_rng(0)
    theta, grad = rng.standard_normal(D), rng.standard_normal(D)
    optimizer = SGD(0.3, weight_decay=0.1)
    assert optimizer.state_names == () and optimizer.init_state(theta) == ()
    new_theta, state = optimizer.update(4, 0.3, theta, (), grad)
    assert state == () and np.array_equal(new_theta, theta - 0.3 * (grad + 0.1 * theta))
    assert SGD(0.3, 0.9).state_names == ("momentum_buffer",)


# -- (2) jvp = derivative of update, vjp = its transpose ----------------------------------------------

def _random_point(optimizer, rng, k=3):
    """A point (θ, state, g̃) and a block of k tangents (θ̇, ṡ, ġ̃), each (D, k)."""
    theta, grad = rng.standard_normal(D), rng.standard_normal(D)
    state = tuple(rng.standard_normal(D) for _ in optimizer.state_names)
    dtheta, dgrad = rng.standard_normal((D, k)), rng.standard_normal((D, k))
    dstate = tuple(rng.standard_normal((D, k)) for _ in optimizer.state_names)
    return theta, state, grad, dtheta, dstate, dgrad


def _central_difference(optimizer, t, lr, theta, state, grad, dtheta, dstate, dgrad, h):
    """Columns of (update(x + h v) − update(x − h v)) / 2h, for each tangent column v = (θ̇, ṡ, ġ̃)."""
    columns_theta, columns_state = [], []
    for col in range(dtheta.shape[1]):
        plus = optimizer.update(t, lr, theta + h * dtheta[:, col],
                                tuple(s + h * ds[:, col] for s, ds in zip(state, dstate)),
                                grad + h * dgrad[:, col])
        minus = optimizer.update(t, lr, theta - h * dtheta[:, col],
                                 tuple(s - h * ds[:, col] for s, ds in zip(state, dstate)),
                                 grad - h * dgrad[:, col])
        columns_theta.append((plus[0] - minus[0]) / (2 * h))
        columns_state.append([(p - m) / (2 * h) for p, m in zip(plus[1], minus[1])])
    fd_theta = np.stack(columns_theta, axis=1)  # (D, k)
    fd_state = tuple(np.stack([c[i] for c in columns_state], axis=1) for i in range(len(state)))
    return fd_theta, fd_state


JVP_CONFIGS = ["heavy_ball", "nesterov", "dampened", "per_coordinate_decay", "nesterov_per_coordinate_decay",
               "plain"]


@pytest.mark.parametrize("name", JVP_CONFIGS)
@pytest.mark.parametrize("t", [0, 3])  # the first step's buffer weight is 1, later ones 1 − τ
def test_jvp_equals_central_differences_of_update(name, t):
    """The update is linear in (θ, state, g̃): its central difference quotient is its derivative exactly,
    up to rounding."""
    optimizer, lr = _sgd(name), 0.3
    rng = np.random.default_rng(t + 10 * JVP_CONFIGS.index(name))
    theta, state, grad, dtheta, dstate, dgrad = _random_point(optimizer, rng)
    jvp_theta, jvp_state = optimizer.jvp(t, lr, theta, state, grad, dtheta, dstate, dgrad)
    fd_theta, fd_state = _central_difference(optimizer, t, lr, theta, state, grad, dtheta, dstate, dgrad,
                                             h=0.5)
    assert np.abs(jvp_theta).max() > 1e-2
    assert rel_err(jvp_theta, fd_theta) <= 1e-13
    assert len(jvp_state) == len(fd_state) == len(optimizer.state_names)
    for a, b in zip(jvp_state, fd_state):
        assert rel_err(a, b) <= 1e-13


@pytest.mark.parametrize("name", ["plain", "heavy_ball", "nesterov", "dampened"])
def test_jvp_in_the_weight_decay_equals_central_differences(name):
    """λ̇ (the tangent of a scalar weight decay, one per column) enters as θ λ̇: against the update with
    λ ± h (linear in λ too)."""
    optimizer, lr, t = _sgd(name), 0.3, 2
    rng = np.random.default_rng(7)
    theta, state, grad, _, _, _ = _random_point(optimizer, rng)
    dlam = np.array([1.0, -2.0])
    zeros = np.zeros((D, 2))
    jvp_theta, jvp_state = optimizer.jvp(t, lr, theta, state, grad, zeros, tuple(zeros for _ in state), zeros,
                                         dlam)
    lam = optimizer.weight_decay
    h = lam / 4  # λ ± h λ̇ stays >= 0 for |λ̇| <= 2
    for col, direction in enumerate(dlam):
        plus = optimizer.replace(weight_decay=lam + h * direction).update(t, lr, theta, state, grad)
        minus = optimizer.replace(weight_decay=lam - h * direction).update(t, lr, theta, state, grad)
        assert rel_err(jvp_theta[:, col], (plus[0] - minus[0]) / (2 * h)) <= 1e-12
        for a, p, m in zip(jvp_state, plus[1], minus[1]):
            assert rel_err(a[:, col], (p - m) / (2 * h)) <= 1e-12
    assert np.abs(jvp_theta).max() > 1e-3


@pytest.mark.parametrize("name", JVP_CONFIGS)
@pytest.mark.parametrize("t", [0, 3])
def test_vjp_is_the_transpose_of_jvp(name, t):
    """<u, J v> = <Jᵀ u, v> over (θ, state) outputs and (θ, state, g̃) inputs, for blocks of columns."""
    optimizer, lr = _sgd(name), 0.3
    rng = np.random.default_rng(100 + t + 10 * JVP_CONFIGS.index(name))
    theta, state, grad, dtheta, dstate, dgrad = _random_point(optimizer, rng, k=4)
    u_theta = rng.standard_normal((D, 4))
    u_state = tuple(rng.standard_normal((D, 4)) for _ in state)
    jv_theta, jv_state = optimizer.jvp(t, lr, theta, state, grad, dtheta, dstate, dgrad)
    vjp_theta, vjp_state, vjp_grad = optimizer.vjp(t, lr, theta, state, grad, u_theta, u_state)
    assert vjp_theta.shape == vjp_grad.shape == (D, 4) and len(vjp_state) == len(state)

    def column_dots(a, b):
        return np.sum(a * b, axis=0)  # (k,)

    left = column_dots(u_theta, jv_theta) + sum(column_dots(u, j) for u, j in zip(u_state, jv_state))
    right = (column_dots(vjp_theta, dtheta) + column_dots(vjp_grad, dgrad)
             + sum(column_dots(s, ds) for s, ds in zip(vjp_state, dstate)))
    assert np.abs(left).min() > 1e-3
    assert rel_err(left, right) <= 1e-13
    # and as matrices: vjp of the first cotangent column = Jᵀ u, with J built column by column from jvp
    J = _dense_jacobian(optimizer, t, lr, theta, state, grad)  # (D (1 + s), D (2 + s)): outputs × inputs
    U = np.concatenate([u_theta[:, 0], *(u[:, 0] for u in u_state)])
    JTu = np.concatenate([vjp_theta[:, 0], *(s[:, 0] for s in vjp_state), vjp_grad[:, 0]])
    assert rel_err(JTu, J.T @ U) <= 1e-13


def _dense_jacobian(optimizer, t, lr, theta, state, grad):
    """∂(θ', state')/∂(θ, state, g̃) by jvp on the unit tangents (inputs ordered θ, state…, g̃)."""
    n_in = D * (2 + len(state))
    eye = np.eye(n_in)
    dtheta, dgrad = eye[:D], eye[n_in - D:]  # (D, n_in) each: all unit tangents as columns
    dstate = tuple(eye[D * (1 + i):D * (2 + i)] for i in range(len(state)))
    jv_theta, jv_state = optimizer.jvp(t, lr, theta, state, grad, dtheta, dstate, dgrad)
    return np.vstack([jv_theta, *jv_state])


# -- (3) bad settings are refused by name --------------------------------------------------------------

LR_ARRAY = r"^`lr` must be a float > 0 or a non-empty array of floats > 0, "
BAD_SETTINGS = {
    "zero lr": (lambda: SGD(0.0), r"^`lr` must be a finite number > 0, got 0.0$"),
    "negative lr": (lambda: SGD(-0.1), r"^`lr` must be a finite number > 0, got -0.1$"),
    "NaN lr": (lambda: SGD(np.nan), r"^`lr` must be a finite number > 0, got nan$"),
    "lr not a number": (lambda: SGD("fast"), r"^`lr` must be a real number > 0, got 'fast'$"),
    "empty lr schedule": (lambda: SGD(np.array([])), LR_ARRAY + r"got an empty array$"),
    "lr schedule with a zero": (lambda: SGD([0.1, 0.0, 0.2]), LR_ARRAY + r"got minimum 0.0$"),
    "lr schedule with NaN": (lambda: SGD([0.1, np.nan]),
                             r"^`lr` must contain only finite values, got 1 NaN/inf entries$"),
    "lr schedule with inf": (lambda: SGD([np.inf, 0.1]), r"^`lr` must contain only finite values"),
    "lr schedule 2-d": (lambda: SGD(np.full((2, 2), 0.1)),
                        r"^`lr` must be 1-dimensional, got shape \(2, 2\)$"),
    "negative weight_decay": (lambda: SGD(0.1, weight_decay=-1e-3),
                              r"^`weight_decay` must be a finite number >= 0, got -0.001$"),
    "NaN weight_decay": (lambda: SGD(0.1, weight_decay=np.nan),
                         r"^`weight_decay` must be a finite number >= 0"),
    "negative per-coordinate weight_decay": (lambda: SGD(0.1, weight_decay=[0.1, -0.2]),
                                             r"^`weight_decay` entries must be >= 0, got minimum -0.2$"),
    "non-finite per-coordinate weight_decay": (lambda: SGD(0.1, weight_decay=[0.1, np.inf]),
                                               r"^`weight_decay` must contain only finite values"),
    "momentum one": (lambda: SGD(0.1, momentum=1.0), r"^`momentum` must lie in \[0, 1\), got 1.0$"),
    "momentum above one": (lambda: SGD(0.1, momentum=1.5), r"^`momentum` must lie in \[0, 1\), got 1.5$"),
    "negative momentum": (lambda: SGD(0.1, momentum=-0.5),
                          r"^`momentum` must be a finite number >= 0, got -0.5$"),
    "dampening above one": (lambda: SGD(0.1, 0.9, dampening=2.0),
                            r"^`dampening` must lie in \[0, 1\], got 2.0$"),
    "nesterov without momentum": (lambda: SGD(0.1, nesterov=True),
                                  r"^`nesterov=True` needs `momentum` > 0 \(as in torch.optim.SGD\), got "
                                  r"momentum=0$"),
    "nesterov not a bool": (lambda: SGD(0.1, 0.9, nesterov=1), r"^`nesterov` must be True or False, got 1$"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_sgd_rejects_bad_settings_by_name(case):
    call, message = BAD_SETTINGS[case]
    with pytest.raises(InvalidInputError, match=message) as info:
        call()
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


# -- (4) an optimizer that does not fit the run is refused ------------------------------------------------

X, Y, _ = refsam.make_gaussian_classification(n=24, n_features=3, seed=5)
PROBLEM = refsam.Problem(refsam.LogisticRegression(), X[:20], Y[:20])  # d = 4


def test_train_refuses_an_lr_schedule_of_the_wrong_length():
    with pytest.raises(InvalidInputError,
                       match=r"^the optimizer's `lr` schedule has 3 rates; the run has 5 steps$"):
        refsam.train(PROBLEM, SAM(0.05), SGD([0.1, 0.1, 0.1]), 5)
    with pytest.raises(InvalidInputError, match=r"the optimizer's `lr` schedule has 3 rates; the run has 2 "):
        refsam.train(PROBLEM, SAM(0.05), SGD([0.1, 0.1, 0.1]), batches=[[0, 1], [2, 3]])
    assert refsam.train(PROBLEM, SAM(0.05), SGD([0.1, 0.2, 0.1])).steps == 3  # T from the schedule


def test_train_refuses_a_per_coordinate_weight_decay_of_the_wrong_dimension():
    bad = SGD(0.1, weight_decay=np.full(3, 0.01))  # d = 4
    with pytest.raises(InvalidInputError, match=r"^the optimizer's per-coordinate `weight_decay` must have "
                                                r"shape \(4,\) like θ, got \(3,\)$"):
        refsam.train(PROBLEM, SAM(0.05), bad, 3)
    run = refsam.train(PROBLEM, SAM(0.05), SGD(0.1, weight_decay=np.full(4, 0.01)), 3)
    assert run.optimizer().config()["weight_decay"] == [0.01] * 4


# -- (5) a Nesterov + weight-decay SAM run: torch's loop, and its exact influence ------------------------

def hand_written_sam_sgd(problem, rho, theta0, batches, lrs, momentum, weight_decay):
    """SAM (ε = ρ g/‖g‖ from the batch gradient) with torch.optim.SGD(momentum, nesterov=True,
    weight_decay) as the base optimizer, in the PyTorch SAM wrapper's order; only ``problem.grad``."""
    theta, buf, thetas = theta0.copy(), None, [theta0.copy()]
    for idx, lr in zip(batches, lrs):
        g = problem.grad(theta, idx)
        eps = rho * g / np.linalg.norm(g)  # first_step: e_w = ρ g/‖g‖ (norm_eps = 0)
        grad = problem.grad(theta + eps, idx)  # second_step: the gradient at θ + ε, θ restored
        d_p = grad + weight_decay * theta  # d_p.add(p, alpha=weight_decay)
        buf = d_p.copy() if buf is None else buf * momentum + d_p  # dampening 0
        d_p = d_p + buf * momentum  # Nesterov
        theta = theta + d_p * (-lr)
        thetas.append(theta.copy())
    return np.array(thetas)


def test_a_nesterov_run_with_weight_decay_is_torchs_loop_and_its_influence_is_exact():
    lam, steps = 0.01, 12
    lrs = np.linspace(0.3, 0.1, steps)
    optimizer = SGD(lrs, momentum=0.9, nesterov=True, weight_decay=lam)
    run = refsam.train(PROBLEM, SAM(0.05), optimizer, batch_size=6, seed=2)
    assert run.steps == steps and set(run.states) == {"momentum_buffer"}
    expected = hand_written_sam_sgd(PROBLEM, 0.05, run.theta0, run.batches, lrs, 0.9, lam)
    assert rel_err(run.thetas, expected) <= 1e-13
    assert np.max(np.abs(run.theta_final - run.theta0)) > 1e-2

    X_test, y_test = X[20:], Y[20:]
    exact = refsam.trajectory_influence(PROBLEM, run, X_test, y_test)  # the adjoint
    autodiff = refsam.trajectory_influence(PROBLEM, run, X_test, y_test, method="autodiff")
    assert exact.shape == (20, 4) and np.abs(autodiff).max() > 1e-6
    assert rel_err(exact, autodiff) <= 1e-9
    # the weight decay and the momentum matter: the same run without them has other influence
    plain = refsam.train(PROBLEM, SAM(0.05), SGD(lrs), batch_size=6, seed=2)
    assert rel_err(refsam.trajectory_influence(PROBLEM, plain, X_test, y_test), exact) > 1e-3
