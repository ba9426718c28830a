"""The "ptc" root solver (pseudo-transient continuation along training's flow): it reaches the root
training converges to, from a trained MLP's end point, within a Jacobian budget; it says why when it
cannot; its shifted solves are the dense solves they replace.

Oracles: long full-batch training runs (the root training approaches), `spectral_radius` of the run's
optimizer at the root, ``np.linalg.solve`` for the shifted systems, and the other solver methods (which
reach saddles from the same starts).
"""

import re

import numpy as np
import pytest

import refsam
from refsam.influence import fixed_point
from refsam.influence.fixed_point import (
    SOLVER_METHODS,
    FixedPointError,
    _ShiftedSolver,
    solve_fixed_point,
)
from refsam.influence.linearisation import residual_jacobian, residual_map
from refsam.tolerances import ATOL_ROOT

JACOBIAN_BUDGET = 15  # issue 27: Jacobian evaluations from a trained MLP's end point to the verified root


def _mlp_run(n, sizes, seed=0):
    """A tanh MLP on Gaussian clusters with 5% flipped labels, SAM ρ = 0.05 on SGD(0.1, momentum 0.9,
    weight decay 1e-2): benchmarks/roots.py's problem at a smaller size."""
    X, y, _ = refsam.make_gaussian_classification(n + 20, sizes[0], sizes[-1], separation=1.0,
                                                  flip_fraction=0.05, seed=seed)
    problem = refsam.Problem(refsam.MLP(sizes, "tanh"), X[:n], y[:n])  # benchmarks/common.py's data
    return problem, refsam.SAM(0.05), refsam.SGD(0.1, momentum=0.9, weight_decay=1e-2)


@pytest.fixture(scope="module")
def small_run():
    """MLP (4, 8, 2), d = 58, n = 200, 1000 steps: the end point has ‖G‖ ≈ 7e-4; hybr and damped Newton
    stop short of a root from it."""
    problem, sam, optimizer = _mlp_run(200, (4, 8, 2))
    end = refsam.train(problem, sam, optimizer, 1000, progress=False).theta_final
    return problem, sam, optimizer, end


def test_ptc_reaches_the_stable_root_training_converges_to_within_the_jacobian_budget(small_run):
    problem, sam, optimizer, end = small_run
    root = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc")
    assert root.converged and root.method == "ptc" and root.reason == "ptc: converged"
    assert np.linalg.norm(residual_map(problem, sam, root.theta, optimizer=optimizer)) <= ATOL_ROOT
    assert root.iterations <= JACOBIAN_BUDGET
    assert root.stable and root.spectral_radius < 1.0
    assert 0.1 < root.start_distance < 1.0  # a real journey from the end point, not a polish
    # the oracle: training itself, run on from the end point, converges to the same root
    onward = refsam.train(problem, sam, optimizer, 10000, theta0=end, progress=False).theta_final
    assert np.linalg.norm(onward - root.theta) <= 1e-6 * np.linalg.norm(root.theta)
    # auto tries ptc first and returns it
    auto = solve_fixed_point(problem, sam, end, optimizer=optimizer)
    assert auto.method == "ptc" and np.array_equal(auto.theta, root.theta)


def test_the_other_methods_stop_short_from_the_same_end_point(small_run):
    """Why ptc is first in "auto": from this end point hybr and damped Newton find no root at all."""
    problem, sam, optimizer, end = small_run
    for method in ("hybr", "newton"):
        with pytest.raises(FixedPointError):
            solve_fixed_point(problem, sam, end, optimizer=optimizer, method=method)


def test_ptc_follows_the_flow_past_a_saddle_that_hybr_and_newton_land_on():
    """MLP (3, 4, 2), n = 60, 300 steps: the end point's ∂G/∂θ has an eigenvalue with negative real part.
    hybr and Newton converge to the saddle next to it (spectral radius > 1: training is repelled from
    it); ptc follows the flow out of the saddle region to the root training reaches."""
    problem, sam, optimizer = _mlp_run(60, (3, 4, 2))
    end = refsam.train(problem, sam, optimizer, 300, progress=False).theta_final
    assert np.min(np.linalg.eigvals(residual_jacobian(problem, sam, end, optimizer=optimizer)).real) < 0
    ptc = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc")
    hybr = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="hybr")
    assert ptc.converged and ptc.stable and hybr.converged and not hybr.stable
    assert np.linalg.norm(ptc.theta - hybr.theta) > 1.0
    onward = refsam.train(problem, sam, optimizer, 20000, theta0=end, progress=False).theta_final
    assert np.linalg.norm(onward - ptc.theta) < 1e-2 * np.linalg.norm(onward - hybr.theta)


def test_ptc_says_the_start_is_outside_the_basin_when_its_budget_runs_out():
    problem, sam, optimizer = _mlp_run(60, (3, 4, 2))
    end = refsam.train(problem, sam, optimizer, 300, progress=False).theta_final
    with pytest.raises(FixedPointError, match=r"ptc reached max_iter=3 at ‖G‖ = ") as info:
        solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc", max_iter=3)
    err = info.value
    # the eigenvalues are those of the Jacobian ptc has in use: at its last iterate, or (lagged) where
    # that Jacobian was taken, and the reason says which
    assert re.search(r"\d+ eigenvalue\(s\) with negative real part at (the last iterate|the Jacobian in use, "
                     r"taken \d\.\de[-+]\d+ from the last iterate) \(min -", err.reason)
    assert "outside the basin of a stable root" in err.reason
    where = residual_map(problem, sam, err.theta, optimizer=optimizer)
    assert err.residual == pytest.approx(np.linalg.norm(where))
    best = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc", max_iter=3,
                             raise_on_failure=False)
    assert best.method == "failed" and not best.converged and best.iterations == 3
    assert best.reason == err.reason


@pytest.mark.parametrize("run", ["small", "saddle"])
def test_lagged_jacobians_with_krylov_corrections_change_the_cost_not_the_root(small_run, monkeypatch, run):
    """ptc takes up to PTC_LAG steps from one Jacobian and corrects each trial, where the chord with that
    Jacobian does not contract, with GMRES on exact products of J at the trial's end. Against the solver
    without either (a fresh Jacobian at every step, PTC_LAG = 1, chord corrections only): the same root
    to rounding, in fewer Jacobians (small: 3 against 13; saddle: 8 against 44). The Krylov corrections
    carry part of that: the lag alone, chord corrections only, takes 6 and 23."""
    if run == "small":
        problem, sam, optimizer, end = small_run
    else:  # the start next to a saddle (test above)
        problem, sam, optimizer = _mlp_run(60, (3, 4, 2))
        end = refsam.train(problem, sam, optimizer, 300, progress=False).theta_final
    now = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc")
    monkeypatch.setattr(fixed_point, "PTC_KRYLOV", False)
    lag_only = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc")
    monkeypatch.setattr(fixed_point, "PTC_LAG", 1)
    before = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc")
    assert now.converged and before.converged and now.stable and before.stable
    assert np.linalg.norm(now.theta - before.theta) <= 1e-9 * np.linalg.norm(before.theta)
    assert now.iterations <= 0.5 * before.iterations
    assert lag_only.converged and now.iterations < lag_only.iterations


@pytest.mark.parametrize("weights", [None, "five removed"])
def test_krylov_corrections_solve_the_implicit_step_where_the_chord_stalls(small_run, monkeypatch, weights):
    """An implicit Euler step G(θ + s) + δ s = 0 from the end point (δ = 1e-2, ‖s‖ ≈ 0.09) with the
    Jacobian of a point 0.04 from it, towards the root, in use: chord corrections alone stall at ‖F‖ ≈ ‖G‖;
    with the inexact Newton corrections (GMRES on exact products of J at each trial's end) F is solved to
    1e-9·‖G‖. Oracles: residual_map for F, the dense residual_jacobian for GMRES's stopping rule."""
    problem, sam, optimizer, end = small_run
    if weights is not None:
        weights = np.ones(problem.n)
        weights[:5] = 0.0
    root = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc", weights=weights).theta
    taken = end + 0.04 * (root - end) / np.linalg.norm(root - end)  # 0.04 towards the root
    G = residual_map(problem, sam, end, weights, optimizer=optimizer)
    lagged = _ShiftedSolver(residual_jacobian(problem, sam, taken, weights, optimizer=optimizer), G, taken)
    delta = 1e-2
    trial = lagged.step(delta)

    def implicit_residual(s):
        return np.linalg.norm(residual_map(problem, sam, end + s, weights, optimizer=optimizer) + delta * s)

    monkeypatch.setattr(fixed_point, "PTC_KRYLOV", False)
    chord, _, size = fixed_point._implicit_step(problem, sam, optimizer, end, weights, lagged, trial, delta)
    assert size == pytest.approx(implicit_residual(chord)) and size > 0.5 * np.linalg.norm(G)
    monkeypatch.setattr(fixed_point, "PTC_KRYLOV", True)
    step, G_new, size = fixed_point._implicit_step(problem, sam, optimizer, end, weights, lagged, trial,
                                                   delta)
    assert implicit_residual(step) <= 1e-9 * np.linalg.norm(G)
    assert size == pytest.approx(implicit_residual(step))
    np.testing.assert_allclose(G_new, residual_map(problem, sam, end + step, weights, optimizer=optimizer))
    # one correction: GMRES stops at ‖(J + δI) x + F‖ ≤ PTC_FORCING·‖F‖, J exact at the trial's end
    point = end + trial
    F = residual_map(problem, sam, point, weights, optimizer=optimizer) + delta * trial
    x = fixed_point._krylov_correction(problem, sam, optimizer, point, weights, lagged, F, delta)
    J = residual_jacobian(problem, sam, point, weights, optimizer=optimizer)
    assert np.linalg.norm(J @ x + delta * x + F) <= fixed_point.PTC_FORCING * np.linalg.norm(F)
    chord_x = lagged.solve(delta, -F)  # the lagged J's own correction does not meet that tolerance
    assert np.linalg.norm(J @ chord_x + delta * chord_x + F) > fixed_point.PTC_FORCING * np.linalg.norm(F)


def test_the_basin_note_counts_the_eigenvalues_where_the_jacobian_was_taken():
    """The note's count is the number of eigenvalues of ∂G/∂θ with negative real part (numpy's eigvals
    as the oracle) at the point its Jacobian was taken, and it says where that point is: the last
    iterate, or how far from it (a lagged Jacobian)."""
    problem, sam, optimizer = _mlp_run(60, (3, 4, 2))
    end = refsam.train(problem, sam, optimizer, 300, progress=False).theta_final
    J = residual_jacobian(problem, sam, end, optimizer=optimizer)
    G = residual_map(problem, sam, end, optimizer=optimizer)
    truth = int(np.sum(np.linalg.eigvals(J).real < 0))
    solver = _ShiftedSolver(J, G, end)
    here = fixed_point._out_of_budget(3, 1.0, solver, end)
    assert f"{truth} eigenvalue(s) with negative real part at the last iterate" in here and truth >= 1
    moved = end + 0.03 * np.ones_like(end) / np.sqrt(end.size)  # 0.03 away
    there = fixed_point._out_of_budget(3, 1.0, solver, moved)
    assert (f"{truth} eigenvalue(s) with negative real part at the Jacobian in use, taken 3.0e-02 from the "
            "last iterate") in there


def test_the_polish_takes_a_fresh_jacobian_where_a_lagged_one_reaches_tol():
    """The first iterate past tol is 9.5e-2 from where the Jacobian in use was taken (‖G‖ = 1.4e-15
    there: the Krylov corrections used exact products of J). The polish must take ∂G/∂θ at that iterate
    (Newton: 1.4e-15 → 5e-17), not chord on with the lagged Jacobian (no chord step lowers ‖G‖ further:
    1.4e-15 stays, 5× the bound below); the oracle is the solver with a fresh Jacobian at every
    step."""
    problem, _, optimizer = _mlp_run(60, (3, 4, 2))
    sam = refsam.SAM(0.05, direction="gsam", alpha=0.3)
    end = refsam.train(problem, sam, optimizer, 300, progress=False).theta_final
    weights = np.ones(problem.n)
    weights[:7] = 0.0
    root = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc", weights=weights)
    assert root.converged and root.residual <= 3e-16  # (chording on with the lagged J: 1.4e-15)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fixed_point, "PTC_LAG", 1)
        patch.setattr(fixed_point, "PTC_KRYLOV", False)
        fresh = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc", weights=weights)
    assert np.linalg.norm(root.theta - fresh.theta) <= 1e-12 * np.linalg.norm(fresh.theta)


def test_ptc_budget_is_honoured_exactly_and_counts_jacobians():
    """From the start next to a saddle (8 Jacobians to the root), budgets of 1 and 4 run out."""
    problem, sam, optimizer = _mlp_run(60, (3, 4, 2))
    end = refsam.train(problem, sam, optimizer, 300, progress=False).theta_final
    for budget in (1, 4):
        best = solve_fixed_point(problem, sam, end, optimizer=optimizer, method="ptc", max_iter=budget,
                                 raise_on_failure=False)
        assert best.iterations == budget and not best.converged


def test_shifted_solves_equal_dense_solves():
    """s(δ) = −(J + δI)⁻¹ G from one Schur form = numpy's dense solve, for δ = 0 and δ > 0; and
    step_within returns the smallest shift whose step fits the radius."""
    rng = np.random.default_rng(0)
    J = rng.standard_normal((12, 12))
    G = rng.standard_normal(12)
    solver = _ShiftedSolver(J, G)
    expected = np.linalg.eigvals(J)
    assert max(np.min(np.abs(expected - m)) for m in solver.eigenvalues) <= 1e-10 * np.max(np.abs(expected))
    for delta in (0.0, 0.3, 7.0):
        expected = np.linalg.solve(J + delta * np.eye(12), -G)
        np.testing.assert_allclose(solver.step(delta), expected, rtol=1e-9)
    b = rng.standard_normal(12)
    np.testing.assert_allclose(solver.solve(0.3, b), np.linalg.solve(J + 0.3 * np.eye(12), b), rtol=1e-9)
    radius = 0.1 * np.linalg.norm(solver.step(0.0))
    step, delta = solver.step_within(0.0, radius)
    assert np.linalg.norm(step) <= radius and delta > 0
    assert np.linalg.norm(solver.step(0.99 * delta)) > radius * 0.999  # the smallest such shift
    step, delta = solver.step_within(0.5, np.inf)  # the guard alone
    assert delta == 0.5 and np.allclose(step, np.linalg.solve(J + 0.5 * np.eye(12), -G))


def test_ptc_is_a_listed_method_and_auto_tries_it_first():
    assert SOLVER_METHODS == ("auto", "ptc", "newton", "hybr", "lm")
