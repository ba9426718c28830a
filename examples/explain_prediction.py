"""Proponents and opponents of one test prediction, on 2-D data (with a figure if matplotlib is there).

    python examples/explain_prediction.py [--quick] [OUT_DIR]

I_j = ∂ ℓ(z_test, θ(w)) / ∂ w_j. Proponents have the most negative I_j: up-weighting them lowers the
test loss, so removing them should raise it. Opponents are the reverse. The script checks both claims
by retraining without them. Set REFSAM_EXAMPLE_QUICK=1 (or pass --quick) for a tiny run.
"""

import os
import sys

import numpy as np

import refsam
from refsam import apps
from refsam.apps.plotting import explanation_2d
from refsam.data import flip_labels, load_dataset, train_test_split

QUICK = "--quick" in sys.argv or os.environ.get("REFSAM_EXAMPLE_QUICK") == "1"
N, STEPS = (60, 100) if QUICK else (250, 300)
args = [a for a in sys.argv[1:] if a != "--quick"]
OUT_DIR = args[0] if args else "refsam-figures"

data = load_dataset("synthetic2d", n=N, seed=0)
train, test = train_test_split(data, 0.2, seed=0)
y_noisy, flipped = flip_labels(train.y, 2, 0.10, seed=1)
problem = refsam.Problem(refsam.LogisticRegression(), train.X, y_noisy)
fit = apps.fit(problem, refsam.SAM(rho=0.05), refsam.SGD(0.5, weight_decay=0.1), steps=STEPS, seed=0)
print(fit.fixed_point.describe())

x, y = test.X[0], int(test.y[0])
expl = apps.explain_prediction(fit, x, y, k=3, method="closed_form")
print(f"\ntest point {x.round(3)} with label {y}")
for name, idx in (("proponents", expl.proponents), ("opponents", expl.opponents)):
    print(f"{name}: " + ", ".join(f"#{j} (label {y_noisy[j]}, I_j = {expl.influence[j]:+.2e})" for j in idx))


def test_loss(theta):
    return problem.model.losses(theta, x[None, :], np.array([y]))[0]


base = test_loss(fit.theta_final)
without_proponents = test_loss(apps.retrain_without(fit, expl.proponents))
without_opponents = test_loss(apps.retrain_without(fit, expl.opponents))
print(f"\ntest loss {base:.4f}; retrained without proponents {without_proponents:.4f}, "
      f"without opponents {without_opponents:.4f}")
assert without_proponents > base > without_opponents

for path in explanation_2d(train.X, y_noisy, x, expl, OUT_DIR):
    print(f"figure written to {path}")
