"""Hypothesis profiles: "ci" (derandomized, bounded; the default), "dev" (more examples, random) and
"fuzz" (20,000 derandomized examples per test, for the long run of tests/3_exact/test_fuzz.py).

Select with HYPOTHESIS_PROFILE=dev or fuzz. CI runs the "ci" profile so results are reproducible.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=15,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    derandomize=True,
    max_examples=20_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- user models: subclasses of refsam.Model that define only the per-sample loss --------------------
# Written here once, used by tests/1_derivatives/test_user_models.py and
# tests/3_exact/test_user_models_methods.py through the fixture below. Each defines `losses` in
# autograd.numpy, `n_params` and `n_classes`, nothing else: every derivative comes from refsam.Model's
# autograd defaults.
import autograd.numpy as anp  # noqa: E402
import pytest  # noqa: E402
from autograd.scipy.stats import norm  # noqa: E402

import refsam  # noqa: E402


class ProbitRegression(refsam.Model):
    """ℓ = −log Φ((2y − 1) z), z = xᵀw + b: binary probit regression."""

    name = "probit"
    n_classes = 2

    def n_params(self, n_features):
        return n_features + 1

    def losses(self, theta, X, y):
        z = anp.dot(X, theta[:-1]) + theta[-1]
        return -norm.logcdf((2.0 * y - 1.0) * z)


class LabelSmoothedLogistic(refsam.Model):
    """ℓ = −[q log σ(z) + (1 − q) log σ(−z)], q = (1 − α) y + α/2: logistic with label smoothing α."""

    name = "smoothed_logistic"
    n_classes = 2

    def __init__(self, alpha=0.1):
        self.alpha = alpha

    def n_params(self, n_features):
        return n_features + 1

    def losses(self, theta, X, y):
        z = anp.dot(X, theta[:-1]) + theta[-1]
        q = (1.0 - self.alpha) * y + 0.5 * self.alpha
        return q * anp.logaddexp(0.0, -z) + (1.0 - q) * anp.logaddexp(0.0, z)


class HandLogistic(refsam.Model):
    """The built-in logistic loss written again by a user: log(1 + e^m), m = (1 − 2y) z."""

    name = "logistic"  # the same spec as refsam.LogisticRegression: the same model
    n_classes = 2

    def n_params(self, n_features):
        return n_features + 1

    def losses(self, theta, X, y):
        z = anp.dot(X, theta[:-1]) + theta[-1]
        return anp.logaddexp(0.0, (1.0 - 2.0 * y) * z)


@pytest.fixture(scope="session")
def user_models():
    """{name: instance} of the hand-written user models above."""
    return {"probit": ProbitRegression(), "smoothed_logistic": LabelSmoothedLogistic(0.1),
            "hand_logistic": HandLogistic()}
