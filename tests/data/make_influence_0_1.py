"""How tests/data/influence_0_1.npz was written: with refsam 0.1.x, not with this code.

    git worktree add /tmp/refsam-0.1 1e182ee
    PYTHONPATH=/tmp/refsam-0.1 python tests/data/make_influence_0_1.py tests/data/influence_0_1.npz

It uses the 0.1 API (Problem(weight_decay=, regularization=), train(..., lr, steps, momentum=...)) on
purpose: the arrays are 0.1's answers, the oracle of tests/3_exact/test_unchanged_from_0_1.py. Not
collected by pytest and not importable under refsam 0.2."""
import sys

import numpy as np

import refsam

print(refsam.__file__, file=sys.stderr)
out = {}
specs = []
X, y, _ = refsam.make_gaussian_classification(n=24, n_features=3, n_classes=3, seed=5)
Xt, yt = X[:4] + 0.1, y[:4]
Xb, yb, _ = refsam.make_gaussian_classification(n=24, n_features=3, seed=6)
Xbt, ybt = Xb[:4] + 0.1, yb[:4]
cases = [
    ("logistic_nesterov_wd_sam", "logistic", dict(weight_decay=1e-2),
     dict(rho=0.05, rule="sam", norm_eps=1e-12), dict(momentum=0.9, nesterov=True), 6),
    ("logistic_heavyball_damp_asam", "logistic", dict(weight_decay=5e-3),
     dict(rho=0.3, rule="asam", kappa=0.0, norm_eps=1e-12), dict(momentum=0.9, dampening=0.3), 8),
    ("softmax_sgd_coupled_usam", "softmax", dict(weight_decay=2e-2, regularization="coupled"),
     dict(rho=0.1, rule="usam"), dict(), 6),
    ("mlp_nesterov_wd_sam_msharp", "mlp", dict(weight_decay=1e-2),
     dict(rho=0.05, rule="sam", m_sharpness=3), dict(momentum=0.9, nesterov=True), 6),
]
for name, kind, pkw, skw, mkw, bs in cases:
    if kind == "logistic":
        model, XX, yy, XT, YT = refsam.LogisticRegression(), Xb, yb, Xbt, ybt
    elif kind == "softmax":
        model, XX, yy, XT, YT = refsam.SoftmaxRegression(3), X, y, Xt, yt
    else:
        model, XX, yy, XT, YT = refsam.MLP((3, 4, 3)), X, y, Xt, yt
    problem = refsam.Problem(model, XX, yy, **pkw)
    sam = refsam.SAM(**skw)
    lr = 0.05 * (1.0 - 0.5 * np.arange(30) / 30)
    traj = refsam.train(problem, sam, lr, 30, batch_size=bs, seed=3, **mkw)
    out[name + "/theta_final"] = traj.theta_final
    out[name + "/influence"] = refsam.trajectory_influence(problem, traj, XT, YT, "adjoint")
    out[name + "/parameters"] = refsam.trajectory_parameter_influence(problem, traj, "forward")
    if "regularization" not in pkw:
        h = refsam.trajectory_hyperparameter_sensitivity(problem, traj)
        out[name + "/d_rho"] = h.d_rho
        out[name + "/d_weight_decay"] = h.d_weight_decay
# a closed form at a root (decoupled)
problem = refsam.Problem(refsam.LogisticRegression(), Xb, yb, weight_decay=1e-2)
sam = refsam.SAM(0.05)
traj = refsam.train(problem, sam, 0.3, 400)
fp = refsam.solve_fixed_point(problem, sam, traj.theta_final, lr=0.3)
out["root/theta_hat"] = fp.theta
for v in ("full", "frozen", "erm"):
    out["root/closed_form_" + v] = refsam.hessian_influence(problem, sam, fp.theta, Xbt, ybt, variant=v)
hs = refsam.hyperparameter_sensitivity(problem, sam, fp.theta)
out["root/d_rho"], out["root/d_weight_decay"] = hs.d_rho, hs.d_weight_decay
np.savez(sys.argv[1], **out)
print(len(out), "arrays", file=sys.stderr)
