"""The SAM people run, replayed: a PyTorch SAM run with the adaptive PyTorch wrapper's conventions
(ASAM with T = |θ|, ‖Tg‖ + 1e-12), torch.optim.SGD with momentum 0.9 (heavy ball or Nesterov) and weight
decay on the weights only (a parameter group with weight_decay=0 for the biases), recorded in torch —
θ_0, the batch order, a learning-rate schedule — and replayed by refsam to ≤ 1e-12 at every step; its
exact influence equals autodiff and replay finite differences. Needs torch (an optional extra)."""

import importlib.util

import numpy as np
import pytest

import refsam
from refsam.tolerances import RTOL_EXACT_METHODS, RTOL_TRAJECTORY_FD, rel_err
from refsam.training import preset

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")


def _torch_run(X, y, nesterov, steps=15, batch=8, rho=0.2, lam=5e-3, seed=0):
    """A softmax-regression SAM run in torch, as a user would write it; returns what refsam needs."""
    import torch

    torch.manual_seed(seed)
    K = int(y.max()) + 1
    W = torch.nn.Parameter(0.3 * torch.randn(X.shape[1], K, dtype=torch.float64))
    b = torch.nn.Parameter(0.1 * torch.randn(K, dtype=torch.float64))
    theta0 = np.concatenate([np.vstack([W.detach().numpy(), b.detach().numpy()[None]]).ravel()])
    sgd = torch.optim.SGD([{"params": [W], "weight_decay": lam}, {"params": [b], "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9, nesterov=nesterov)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    rng = np.random.default_rng(seed)
    batches, lrs, thetas = [], 0.1 * np.linspace(1.0, 0.5, steps), []
    for t in range(steps):
        idx = rng.choice(len(y), size=batch, replace=False)
        batches.append(idx)

        def loss(idx=idx):
            return torch.nn.functional.cross_entropy(Xt[idx] @ W + b, yt[idx])

        sgd.zero_grad()
        loss().backward()
        with torch.no_grad():  # the adaptive wrapper's first step: e_w = p² g ρ/(‖|p| g‖ + 1e-12)
            norm = torch.sqrt(((W.abs() * W.grad) ** 2).sum() + ((b.abs() * b.grad) ** 2).sum())
            e_W, e_b = W**2 * W.grad * rho / (norm + 1e-12), b**2 * b.grad * rho / (norm + 1e-12)
            W.add_(e_W), b.add_(e_b)
        sgd.zero_grad()
        loss().backward()
        with torch.no_grad():  # second step: back to θ, then the base optimizer
            W.sub_(e_W), b.sub_(e_b)
        for group in sgd.param_groups:
            group["lr"] = float(lrs[t])
        sgd.step()
        thetas.append(np.vstack([W.detach().numpy(), b.detach().numpy()[None]]).ravel())
    return theta0, batches, lrs, np.array(thetas)


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy_ball", "nesterov"])
def test_a_pytorch_sam_run_is_replayed_to_1e_12_per_step_and_its_influence_checked(nesterov):
    X, y, _ = refsam.make_gaussian_classification(n=30, n_features=4, n_classes=3, seed=1)
    X_train, y_train = X[:24], y[:24]
    theta0, batches, lrs, torch_thetas = _torch_run(X_train, y_train, nesterov)
    problem = refsam.Problem(refsam.SoftmaxRegression(3), X_train, y_train)
    p = preset("pytorch-sam-adaptive", problem, rho=0.2, lr=lrs, momentum=0.9, nesterov=nesterov)
    weights_only = np.where(problem.model.bias_mask(problem.p), 0.0, 5e-3)  # torch's parameter groups
    optimizer = p.optimizer.replace(weight_decay=weights_only)
    run = refsam.train(p.problem, p.sam, optimizer, theta0=theta0, batches=batches)
    per_step = np.max(np.abs(run.thetas[1:] - torch_thetas), axis=1)
    assert np.max(per_step) <= 1e-12, per_step
    exact = refsam.trajectory_influence(problem, run, X[24:], y[24:])
    assert rel_err(exact, refsam.trajectory_influence(problem, run, X[24:], y[24:], method="autodiff")) <= \
        RTOL_EXACT_METHODS
    assert rel_err(exact, refsam.finite_difference_replay(problem, run, X[24:], y[24:])) <= RTOL_TRAJECTORY_FD
