"""Data removal / model editing: drop the k training points most harmful to a validation loss, retrain,
and compare the actual change with each method's prediction and with removing k random points.

    python examples/remove_data.py [--quick]

Influence predicts the effect of removing a set S of points linearly: Δf ≈ −Σ_{j∈S} I_j(f), with
f the mean validation loss. The retraining here is the same procedure (same θ_0, learning rate and
steps) with w_j = 0 for j in S. Set REFSAM_EXAMPLE_QUICK=1 (or pass --quick) for a tiny run.
"""

import os
import sys

import numpy as np

import refsam
from refsam import apps
from refsam.data import flip_labels, load_dataset, train_test_split

QUICK = "--quick" in sys.argv or os.environ.get("REFSAM_EXAMPLE_QUICK") == "1"
N, STEPS, K = (80, 100, 3) if QUICK else (300, 300, 10)

data = load_dataset("synthetic", n=N, seed=2)
train, val = train_test_split(data, 0.25, seed=0)
y_noisy, flipped = flip_labels(train.y, 2, 0.10, seed=1)
problem = refsam.Problem(refsam.LogisticRegression(), train.X, y_noisy)
fit = apps.fit(problem, refsam.SAM(rho=0.05), refsam.SGD(0.5, weight_decay=1e-2), steps=STEPS, seed=0)

f0 = apps.mean_loss(problem, fit.theta_final, val.X, val.y)
results = apps.remove_harmful(fit, val.X, val.y, k=K,
                              methods=["closed_form", "closed_form_erm", "trajectory", "tracin"],
                              n_random=3, seed=0)
print(f"validation loss before removal: {f0:.5f}; removing k = {K} of {problem.n} training points")
print(f"{'method':<12}{'predicted Δf':>14}{'actual Δf':>12}{'flipped':>9}")
for r in results:
    predicted = "—" if np.isnan(r.predicted_change) else f"{r.predicted_change:+.5f}"
    print(f"{r.method:<12}{predicted:>14}{r.actual_change:>+12.5f}{int(flipped[r.removed].sum()):>6}/{K}")

exact = next(r for r in results if r.method == "trajectory")
random_mean = np.mean([r.actual_change for r in results if r.method == "random"])
assert exact.actual_change < random_mean, "targeted removal should beat random removal"
assert np.sign(exact.actual_change) == np.sign(exact.predicted_change)
