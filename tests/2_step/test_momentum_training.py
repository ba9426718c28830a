"""Rung 2 for the base optimizer: momentum follows torch.optim.SGD to the letter (heavy ball, Nesterov,
dampening), μ = 0 is the plain step bit for bit, runs with momentum replay exactly and round-trip their
files, 0.1 files still load, and an external batch schedule is replayed as given."""

import json

import numpy as np
import pytest

import refsam
from refsam.training import sam_gradient

X, Y, _ = refsam.make_gaussian_classification(n=30, n_features=3, seed=2)
OPTIMIZERS = {"heavy_ball": (0.9, 0.0, False), "nesterov": (0.9, 0.0, True),
              "dampened": (0.8, 0.3, False), "nesterov_dampened": (0.7, 0.2, True)}


LAMBDA = 0.05  # the weight decay: the optimizer's (0.1's "decoupled") or the loss's l2 (0.1's "coupled")


def _problem(penalty="weight_decay"):
    """The problem: its loss carries λ as ``l2`` for penalty "l2" (0.1's coupled mode), nothing otherwise."""
    return refsam.Problem(refsam.LogisticRegression(), X, Y, l2=LAMBDA if penalty == "l2" else 0.0)


def _sgd(lr, momentum=0.0, dampening=0.0, nesterov=False, penalty="weight_decay"):
    """The base optimizer: λ is its weight decay for penalty "weight_decay" (0.1's decoupled mode)."""
    return refsam.SGD(lr, momentum, dampening, nesterov,
                      weight_decay=LAMBDA if penalty == "weight_decay" else 0.0)


def _direction(problem, sam, theta, idx, lam):
    """0.1's descent direction d = g̃ + λθ (λ the optimizer's weight decay; 0 when it sits in the loss)."""
    return sam_gradient(problem, sam, theta, idx).descent + lam * theta


def _torch_sgd_reference(problem, sam, theta0, batches, lrs, momentum, dampening, nesterov, lam):
    """torch.optim.SGD's update written out as its source does it, on refsam's SAM descent gradient g̃:
    d = g̃ + λθ (weight decay included); buf = clone(d) at the first step, else buf.mul_(μ).add_(d, 1 − τ);
    d = d.add(buf, alpha=μ) if nesterov else buf; p.add_(d, alpha=−lr)."""
    theta, buf, thetas, bufs = theta0.copy(), None, [theta0.copy()], []
    for idx, lr in zip(batches, lrs):
        d = _direction(problem, sam, theta, idx, lam)
        buf = d.copy() if buf is None else buf * momentum + d * (1.0 - dampening)
        d = d + buf * momentum if nesterov else buf
        theta = theta + d * (-lr)
        thetas.append(theta.copy())
        bufs.append(buf.copy())
    return np.array(thetas), np.array(bufs)


def test_zero_momentum_is_the_plain_step_bit_for_bit():
    problem, sam = _problem(), refsam.SAM(0.1, "asam")
    run = refsam.train(problem, sam, _sgd(0.3, momentum=0.0), steps=12, batch_size=7, seed=1)
    theta = run.theta0
    for t, idx in enumerate(run.batches):
        theta = theta - run.lrs[t] * _direction(problem, sam, theta, idx, LAMBDA)
        np.testing.assert_array_equal(run.thetas[t + 1], theta)
    optimizer = run.optimizer()
    assert run.states == {} and optimizer.state_names == () and run.state(5) == ()
    assert optimizer.config() == {"name": "SGD", "momentum": 0.0, "dampening": 0.0, "nesterov": False,
                                  "weight_decay": LAMBDA}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("penalty", ["weight_decay", "l2"])
def test_momentum_training_follows_torch_sgd_to_the_letter(name, penalty):
    momentum, dampening, nesterov = OPTIMIZERS[name]
    problem, sam = _problem(penalty), refsam.SAM(0.05, "sam")
    lrs = np.linspace(0.3, 0.1, 15)
    run = refsam.train(problem, sam, _sgd(lrs, momentum, dampening, nesterov, penalty), 15, batch_size=8,
                       seed=3)
    lam = LAMBDA if penalty == "weight_decay" else 0.0
    thetas, bufs = _torch_sgd_reference(problem, sam, run.theta0, run.batches, lrs, momentum, dampening,
                                        nesterov, lam)
    np.testing.assert_allclose(run.thetas, thetas, rtol=1e-15, atol=0)
    np.testing.assert_allclose(run.states["momentum_buffer"], bufs, rtol=1e-15, atol=0)
    plain = refsam.train(problem, sam, _sgd(lrs, penalty=penalty), 15, batch_size=8, seed=3)
    assert np.max(np.abs(run.theta_final - plain.theta_final)) > 1e-3  # momentum changes the run


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_momentum_run_replays_bit_for_bit_and_round_trips_its_file(name, tmp_path):
    momentum, dampening, nesterov = OPTIMIZERS[name]
    problem = _problem()
    run = refsam.train(problem, refsam.SAM(0.1), _sgd(0.2, momentum, dampening, nesterov), 10, batch_size=6)
    again = refsam.replay(problem, run)
    np.testing.assert_array_equal(again.thetas, run.thetas)
    np.testing.assert_array_equal(again.states["momentum_buffer"], run.states["momentum_buffer"])
    run.save(tmp_path / "run.npz")
    loaded = refsam.Trajectory.load(tmp_path / "run.npz")
    assert set(loaded.states) == {"momentum_buffer"}
    np.testing.assert_array_equal(loaded.states["momentum_buffer"], run.states["momentum_buffer"])
    expected = _sgd(0.2, momentum, dampening, nesterov)
    assert loaded.optimizer().config() == run.optimizer().config() == expected.config()
    np.testing.assert_array_equal(loaded.optimizer().lr, run.optimizer().lr)
    np.testing.assert_array_equal(run.optimizer().lr, np.full(10, 0.2))
    counterfactual = refsam.replay(problem, loaded, weights=np.r_[0.0, np.ones(problem.n - 1)])
    assert not np.array_equal(counterfactual.thetas, run.thetas)


def _v01_config(config):
    """A format-4 run configuration written as refsam 0.1 wrote it: the weight decay on the problem,
    "decoupled" (the optimizer's) or "coupled" (the loss's l2); no "optimizer" and "l2" keys."""
    old = {k: v for k, v in config.items() if k not in ("l2", "optimizer")}
    coupled = config["l2"] != 0.0
    old["weight_decay"] = config["l2"] if coupled else config["optimizer"]["weight_decay"]
    old["regularization"] = "coupled" if coupled else "decoupled"
    return old


@pytest.mark.parametrize("penalty", ["weight_decay", "l2"])  # 0.1's "decoupled" and "coupled" files
def test_a_version_1_file_still_loads_as_a_run_without_momentum(tmp_path, penalty):
    problem = _problem(penalty)
    run = refsam.train(problem, refsam.SAM(0.1), _sgd(0.3, penalty=penalty), 5, batch_size=10)
    new_keys = ("momentum", "dampening", "nesterov", "schedule")
    config = {k: v for k, v in _v01_config(run.config).items() if k not in new_keys}
    offsets = np.cumsum([0] + [len(b) for b in run.batches])
    with open(tmp_path / "v1.npz", "wb") as fh:  # the 0.1 layout: no buffers, no momentum keys
        np.savez(fh, format_version=np.array(1), thetas=run.thetas, epsilons=run.epsilons,
                 batch_indices=np.concatenate(run.batches), batch_offsets=offsets, lrs=run.lrs,
                 weights=run.weights, config_json=np.array(json.dumps(config, sort_keys=True)))
    loaded = refsam.Trajectory.load(tmp_path / "v1.npz")
    assert loaded.optimizer().config() == run.optimizer().config() and loaded.states == {}
    # decoupled -> SGD's weight decay; coupled -> the loss's l2
    expected = (LAMBDA, 0.0) if penalty == "weight_decay" else (0.0, LAMBDA)
    assert (loaded.optimizer().weight_decay, loaded.config["l2"]) == expected
    np.testing.assert_array_equal(refsam.replay(problem, loaded).thetas, run.thetas)


def test_a_version_2_file_loads_without_gradient_norms_and_gives_the_same_influence(tmp_path):
    problem = _problem()
    run = refsam.train(problem, refsam.SAM(0.1), _sgd(0.3, momentum=0.9), 5, batch_size=10)
    assert run.grad_norms is not None and run.grad_norms.shape == (5,)
    offsets = np.cumsum([0] + [len(b) for b in run.batches])
    config = {**_v01_config(run.config), "momentum": 0.9, "dampening": 0.0, "nesterov": False}
    with open(tmp_path / "v2.npz", "wb") as fh:  # the format-2 layout: buffers, no gradient norms
        np.savez(fh, format_version=np.array(2), thetas=run.thetas, epsilons=run.epsilons,
                 batch_indices=np.concatenate(run.batches), batch_offsets=offsets, lrs=run.lrs,
                 weights=run.weights, buffers=run.states["momentum_buffer"],
                 config_json=np.array(json.dumps(config, sort_keys=True)))
    loaded = refsam.Trajectory.load(tmp_path / "v2.npz")
    assert loaded.grad_norms is None
    assert loaded.optimizer().config() == run.optimizer().config()
    np.testing.assert_array_equal(loaded.states["momentum_buffer"], run.states["momentum_buffer"])
    X_test, y_test = problem.X[:3], problem.y[:3]
    recomputed = refsam.trajectory_influence(problem, loaded, X_test, y_test)  # g_t from a gradient
    stored = refsam.trajectory_influence(problem, run, X_test, y_test)  # g_t from ε_t and ‖g_t‖
    np.testing.assert_allclose(stored, recomputed, rtol=1e-12, atol=1e-15 * np.abs(recomputed).max())
    run.save(tmp_path / "v3.npz")
    np.testing.assert_array_equal(refsam.Trajectory.load(tmp_path / "v3.npz").grad_norms, run.grad_norms)


def test_seed_alone_and_seed_with_its_own_init_draw_the_same_batches():
    problem = _problem()
    a = refsam.train(problem, refsam.SAM(0.1), _sgd(0.3), 9, batch_size=7, seed=5)
    b = refsam.train(problem, refsam.SAM(0.1), _sgd(0.3), 9, batch_size=7, seed=5,
                     theta0=problem.init_params(5))
    for batch_a, batch_b in zip(a.batches, b.batches):
        np.testing.assert_array_equal(batch_a, batch_b)
    np.testing.assert_array_equal(a.thetas, b.thetas)


def test_an_external_batch_schedule_is_replayed_as_given():
    problem = _problem()
    rng = np.random.default_rng(0)
    schedule = [rng.choice(problem.n, size=k, replace=False) for k in (5, 9, 3, 30, 5)]  # unsorted, any size
    lrs = [0.3, 0.2, 0.2, 0.1, 0.05]
    run = refsam.train(problem, refsam.SAM(0.1), _sgd(lrs, momentum=0.9), batches=schedule,
                       theta0=np.zeros(problem.d))
    assert run.steps == 5 and run.config["schedule"] == "external"
    for given, used in zip(schedule, run.batches):
        np.testing.assert_array_equal(given, used)
    thetas, _ = _torch_sgd_reference(problem, refsam.SAM(0.1), np.zeros(problem.d), schedule, lrs, 0.9, 0.0,
                                     False, LAMBDA)
    np.testing.assert_allclose(run.thetas, thetas, rtol=1e-15, atol=0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"momentum": 1.0}, r"`momentum` must lie in \[0, 1\), got 1.0"),
    ({"momentum": -0.1}, r"`momentum` must be a finite number >= 0, got -0.1"),
    ({"momentum": 0.9, "dampening": 1.5}, r"`dampening` must lie in \[0, 1\], got 1.5"),
    ({"nesterov": True}, r"`nesterov=True` needs `momentum` > 0"),
    ({"nesterov": "yes", "momentum": 0.9}, r"`nesterov` must be True or False, got 'yes'"),
    ({"batches": [[0, 1], [2, 99]]}, r"`batches\[1\]` must lie in 0..29, got values in 2..99"),
    ({"batches": [[0, 1], []]}, r"`batches\[1\]` must be a non-empty 1-d array of ints"),
    ({"batches": [], "steps": None}, r"`batches` must hold at least one batch"),
    ({"batches": [[0, 1]], "steps": 3}, r"`steps` \(3\) must equal len\(batches\) \(1\)"),
    ({"batches": [[0, 1]], "batch_size": 2, "steps": None}, r"pass either `batches`"),
    ({"steps": None}, r"`steps` is required unless an external schedule `batches` is given"),
])
def test_bad_optimizer_and_schedule_arguments_are_rejected_by_name(kwargs, message):
    """The optimizer's settings are refused by refsam.SGD (momentum, dampening, nesterov), the schedule's
    by train."""
    optimizer_keys = ("momentum", "dampening", "nesterov")
    settings = {k: v for k, v in kwargs.items() if k in optimizer_keys}
    arguments = {"steps": 3, **{k: v for k, v in kwargs.items() if k not in optimizer_keys}}
    with pytest.raises(ValueError, match=message):
        refsam.train(_problem(), refsam.SAM(0.1), refsam.SGD(0.1, **settings), **arguments)


def test_the_0_1_optimizer_and_step_names_are_gone():
    """0.1's SGDMomentum, descent_direction, sam_step and train's lr/momentum keywords are gone: the base
    optimizer is refsam.SGD, the step's descent gradient sam_gradient(...).descent."""
    import refsam.training as training

    for name in ("SGDMomentum", "descent_direction", "sam_step"):
        assert not hasattr(training, name) and not hasattr(refsam, name), name
    with pytest.raises(TypeError, match="momentum"):
        refsam.train(_problem(), refsam.SAM(0.1), _sgd(0.1), 3, momentum=0.9)
    with pytest.raises(TypeError, match="lr"):
        refsam.train(_problem(), refsam.SAM(0.1), lr=0.1, steps=3)
