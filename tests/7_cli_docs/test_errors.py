"""One base class for every failure refsam raises on purpose, each also the standard type 0.1 raised."""

import numpy as np
import pytest

import refsam
from refsam.kit.files import CaseFileError


@pytest.mark.parametrize("error, standard", [
    (refsam.InvalidInputError, ValueError),
    (refsam.SingularSystemError, np.linalg.LinAlgError),
    (refsam.ZeroGradientError, FloatingPointError),
    (refsam.FixedPointError, RuntimeError),
    (refsam.NoFixedPointError, RuntimeError),
    (refsam.UnverifiedRootError, ValueError),
    (CaseFileError, ValueError),
    (refsam.DivergenceError, FloatingPointError),
    (refsam.NonFiniteResultError, FloatingPointError),
])
def test_every_refsam_exception_is_a_refsam_error_and_its_standard_type(error, standard):
    assert issubclass(error, refsam.RefsamError) and issubclass(error, standard)


@pytest.mark.parametrize("call", [
    lambda: refsam.SAM(-1.0, "sam"),
    lambda: refsam.Problem(refsam.LogisticRegression(), np.ones((3, 2)), [0, 1, 2]),
    lambda: refsam.Problem(refsam.LogisticRegression(), np.full((3, 2), np.nan), [0, 1, 0]),
    lambda: refsam.solve_fixed_point(refsam.Problem(refsam.LogisticRegression(), np.eye(2), [0, 1]),
                                     refsam.SAM(0.1, "sam"), np.zeros(3), max_iter=0),
])
def test_bad_arguments_raise_invalid_input_error(call):
    with pytest.raises(refsam.InvalidInputError):
        call()


def test_every_exception_class_refsam_defines_is_a_refsam_error():
    """Walks every module: a new exception class outside the hierarchy fails here."""
    import importlib
    import pkgutil

    found = set()
    for info in pkgutil.walk_packages(refsam.__path__, "refsam."):
        if info.name == "refsam.cli.__main__":
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseException)
                    and not issubclass(value, Warning) and value.__module__.startswith("refsam")):
                found.add(value)
    assert refsam.DivergenceError in found and len(found) >= 8
    assert [cls.__name__ for cls in found if not issubclass(cls, refsam.RefsamError)] == []


def test_a_diverging_run_raises_divergence_error():
    problem = refsam.Problem(refsam.LogisticRegression(), 1e3 * np.eye(3), [0, 1, 0], l2=0.0)
    with pytest.raises(refsam.DivergenceError, match=r"training diverged at step \d+"):
        refsam.train(problem, refsam.SAM(0.0, "sam"), refsam.SGD(1e306), 50)


def test_an_influence_that_leaves_float64s_range_raises_instead_of_returning_nan():
    """Found by the fuzz suite: a sample weight of ~5e-309 (subnormal gradients) made the adjoint's
    ρ/‖g‖ overflow and the influence NaN; refsam now raises NonFiniteResultError naming the method."""
    problem = refsam.Problem(refsam.LogisticRegression(), np.zeros((2, 1)), [0, 0],
                             weights=[5.09739424e-253 * 2.0**-186, 0.0])
    run = refsam.train(problem, refsam.SAM(0.25), refsam.SGD(0.5 * 2.0**186), 1,
                       theta0=[0.0012573, -0.00132105])
    with pytest.raises(refsam.NonFiniteResultError, match=r"trajectory_influence\(method='adjoint'\) has \d+ "
                                                          r"non-finite entries"):
        refsam.trajectory_influence(problem, run, np.zeros((1, 1)), [0])
