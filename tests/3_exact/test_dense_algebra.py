"""The minimum dense work: the condition number from the LU already computed (LAPACK gecon, not an
SVD) and the spectral radius from ARPACK above DENSE_EIGEN_MAX, each against the dense reference."""

import numpy as np
import pytest

import refsam.influence.fixed_point as fixed_point
from refsam.influence.linearisation import factorise
from refsam.training import SGDMomentum


@pytest.mark.parametrize("log_cond", [0, 4, 10])
def test_the_lu_condition_estimate_brackets_the_exact_1_norm_condition_number(log_cond):
    rng = np.random.default_rng(log_cond)
    d = 60
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    J = U @ np.diag(np.logspace(0, -log_cond, d)) @ V.T
    exact = np.linalg.cond(J, 1)
    estimate = factorise(J).condition_number
    assert exact / 10 <= estimate <= exact * (1 + 1e-9)  # gecon bounds ‖J⁻¹‖₁ from below, within ~3×
    assert not factorise(J).singular


@pytest.mark.parametrize("J", [np.zeros((3, 3)), np.array([[1.0, 2.0], [2.0, 4.0]]),
                               np.diag([1.0, 1e-17, 1.0])])
def test_singular_relative_to_its_own_scale(J):
    factors = factorise(J)
    assert factors.singular and factors.condition_number == np.inf


@pytest.mark.parametrize("optimizer", [None, SGDMomentum(0.9), SGDMomentum(0.9, nesterov=True),
                                       SGDMomentum(0.5, dampening=0.3)],
                         ids=["sgd", "heavy", "nesterov", "damped"])
def test_arpack_spectral_radius_equals_the_dense_one(optimizer, monkeypatch):
    rng = np.random.default_rng(0)
    d = fixed_point.DENSE_EIGEN_MAX + 44
    A = rng.standard_normal((d, d))
    J = A @ A.T / d + 0.1 * np.eye(d) + 0.05 * rng.standard_normal((d, d))  # non-symmetric, like SAM's
    iterative = fixed_point.spectral_radius(J, 0.3, optimizer)
    monkeypatch.setattr(fixed_point, "DENSE_EIGEN_MAX", 10**9)
    dense = fixed_point.spectral_radius(J, 0.3, optimizer)
    assert abs(iterative - dense) <= 1e-10 * dense
    monkeypatch.setattr(fixed_point, "_iterative_spectral_radius", lambda *args: None)  # no convergence
    monkeypatch.setattr(fixed_point, "DENSE_EIGEN_MAX", 10)
    assert fixed_point.spectral_radius(J, 0.3, optimizer) == dense  # falls back to the dense path
