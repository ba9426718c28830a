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
