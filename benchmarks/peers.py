"""refsam against its peers at ρ = 0: pyDVL's ``DirectInfluence`` and dattri's ``IFAttributorExplicit``
on the same problems, in one run, each ratio beside the largest difference of the scores.

    python benchmarks/peers.py [--quick] [--json OUT] [--update RESULTS.json]

(``benchmarks/run.py`` calls :func:`run_peer_benchmarks` too, with the sizes of its
``CONFIGS[mode]["peers"]``; ``--update`` merges the keys below into an existing results file, e.g.
benchmarks/results.json.)

Neither peer is a dependency of refsam: each side that is not installed is skipped with a message
(``peers_skipped``), and with neither installed nothing is timed. pyDVL pins NumPy < 2, so measure in a
separate environment, e.g.
``python3 -m venv venv-peers && venv-peers/bin/pip install -e . "pydvl[influence]" dattri``.

What is compared (docs/coming_from.md). At ρ = 0 the SAM root is the minimiser of the mean training loss
plus the optimizer's weight decay λ, and refsam's closed form is Koh–Liang's influence with J = H + λI,
the system both peers solve with λ as their Hessian ``regularization``:

    refsam    I = hessian_influence(problem, SAM(0), root, X_test, y_test)      (n, m), verified root
    pyDVL     DirectInfluence(model, loss, regularization=λ).fit(loader)
                  .influences(x_test, y_test, x, y)   (m, n) = −n · Iᵀ
    dattri    IFAttributorExplicit(task, regularization=λ); .cache(loader)
                  .attribute(train_loader, test_loader)   (n, m) = −n · I

Each side starts from the same θ (copied into a float64 torch model of the same function: logistic
regression, or the tanh MLP with a softmax cross-entropy) and returns all n × m scores, everything it
needs (Hessian, solve, per-sample gradients) included; the loaders hold the whole training set in one
batch (the peers' exact setting). Torch runs on one thread (``torch.set_num_threads(1)``), as NumPy's
BLAS does (common.py). The sides are timed in turn
(common.round_robin_best_times), best of ``repeats``.

For logistic regression θ is a verified root (``common.sam_root`` at ρ = 0). For the MLPs it is the end of
a full-batch run of ``mlp_steps`` steps, passed with ``on_unverified="warn"``: the root solver does not
reach a verified root of these MLPs from such a run (issue 27, item 2), and neither the cost nor the
agreement depends on it — at ρ = 0 every side evaluates the same formula, −∇ℓ_kᵀ (H(θ) + λI)⁻¹ ∇ℓ_j / n,
at whatever θ it is given (refsam's residual check costs two gradients). Each row says which θ it used.

Stable JSON keys (present only where the peer is installed):
    pydvl_direct_over_refsam       {size: pyDVL's seconds / refsam's}, e.g. "logistic_d51", "mlp_d227"
    dattri_explicit_over_refsam    {size: dattri's seconds / refsam's}
    peers_runs                     per size: model, n, d, m, seconds per side, the ratios and
                                   max_abs_diff (the peer's scores against refsam's converted, −n·Iᵀ or
                                   −n·I), max_abs_score (the largest |score|) and max_rel_diff (the one
                                   over the other), which θ was used
    peers_versions                 the versions measured (numpy, torch, pydvl, dattri)
    peers_skipped                  {peer: why it was not measured}
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings

import common  # noqa: F401  (first: one BLAS thread before NumPy loads, and this checkout on sys.path)
import numpy as np
from common import (
    BLAS_THREADS,
    logistic_problem,
    mlp_problem,
    round_robin_best_times,
    sam_root,
    topic_main,
)

from refsam import SAM, hessian_influence, train

INSTALL = {"pydvl": "pip install 'pydvl[influence]' (it needs NumPy < 2: use a separate venv)",
           "dattri": "pip install dattri"}


def _available() -> tuple[dict, dict]:
    """({peer: module}, {peer: why skipped}) for pyDVL's torch influence and dattri; torch itself first."""
    found, skipped = {}, {}
    os.environ.setdefault("TQDM_DISABLE", "1")  # dattri's progress bars (read when tqdm is first imported)
    try:
        import torch  # noqa: F401
    except ImportError:
        return {}, {peer: f"torch is not installed ({INSTALL[peer]})" for peer in INSTALL}
    modules = {"pydvl": "pydvl.influence.torch", "dattri": "dattri.algorithm.influence_function"}
    for peer, module in modules.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the peers' deprecation notices
                found[peer] = __import__(module, fromlist=["_"])
        except ImportError as error:
            skipped[peer] = f"{peer} is not installed or does not import ({error}); {INSTALL[peer]}"
    return found, skipped


def _versions(peers: dict) -> dict:
    out = {"numpy": np.__version__}
    for dist in ("torch", "pydvl", "dattri"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def torch_model(problem, theta):
    """refsam's model with θ̂ as a float64 torch module, and its mean loss ``loss(outputs, targets)``.

    Logistic regression: θ = [w, b] (bias last) → Linear(p, 1), one logit per row; the loss is binary
    cross-entropy with logits. MLP: layer l's W_l (in, out) → Linear.weight = W_lᵀ, tanh between layers,
    softmax cross-entropy."""
    import torch

    if problem.model.name == "logistic":
        linear = torch.nn.Linear(problem.p, 1).double()
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(theta[:-1]).reshape(1, -1))
            linear.bias.copy_(torch.tensor(theta[-1:]))
        model = torch.nn.Sequential(linear, torch.nn.Flatten(0))

        def loss(outputs, targets):
            return torch.nn.functional.binary_cross_entropy_with_logits(outputs.reshape(-1),
                                                                      targets.reshape(-1))
        return model, loss, torch.float64
    layers = []
    for l, (W, b) in enumerate(problem.model.unpack(theta)):
        linear = torch.nn.Linear(*W.shape).double()
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(W.T))
            linear.bias.copy_(torch.tensor(b))
        layers += [linear] if l == len(problem.model.sizes) - 2 else [linear, torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers)

    def loss(outputs, targets):
        return torch.nn.functional.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))
    return model, loss, torch.long


def bench_peers(problem, optimizer, X_test, y_test, peers: dict, repeats: int,
                run_steps: int | None = None) -> dict:
    """refsam's closed form at ρ = 0 against each installed peer on one problem (module docstring)."""
    import torch

    torch.set_num_threads(int(BLAS_THREADS))
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # dattri allocates its score matrix in the default dtype
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dattri: "treating the train_dataloader as the full set"
            return _bench_peers(problem, optimizer, X_test, y_test, peers, repeats, run_steps)
    finally:
        torch.set_default_dtype(default_dtype)


def _bench_peers(problem, optimizer, X_test, y_test, peers: dict, repeats: int,
                 run_steps: int | None) -> dict:
    import torch

    sam = SAM(0.0)
    if run_steps is None:  # a verified root, as refsam's closed form requires by default
        root = sam_root(problem, sam, optimizer)
        theta, where, options = root.theta, "a verified root", {}
    else:  # the end of a full-batch run, accepted with a warning (module docstring)
        theta = train(problem, sam, optimizer, run_steps, progress=False).theta_final
        root, options = theta, {"optimizer": optimizer, "on_unverified": "warn"}
        where = f"the end of a {run_steps}-step full-batch run, not a verified root"
    lam = optimizer.weight_decay
    n = problem.n
    model, loss, label_type = torch_model(problem, theta)
    X, y = torch.tensor(problem.X), torch.tensor(problem.y, dtype=label_type)
    Xt, yt = torch.tensor(X_test), torch.tensor(y_test, dtype=label_type)
    train_set = torch.utils.data.TensorDataset(X, y)
    loader = torch.utils.data.DataLoader(train_set, batch_size=n)  # the whole set in one batch
    out: dict = {}

    def refsam_side():
        out["refsam"] = hessian_influence(problem, sam, root, X_test, y_test, **options)  # (n, m)

    sides = {"refsam": refsam_side}
    if "pydvl" in peers:
        def pydvl_side():
            influence = peers["pydvl"].DirectInfluence(model, loss, regularization=lam).fit(loader)
            out["pydvl"] = influence.influences(Xt, yt, X, y, mode="up").detach().numpy()  # (m, n)
        sides["pydvl"] = pydvl_side
    if "dattri" in peers:
        from dattri.task import AttributionTask

        def dattri_loss(params, data):
            inputs, targets = data
            return loss(torch.func.functional_call(model, params, (inputs,)), targets)

        task = AttributionTask(loss_func=dattri_loss, model=model, checkpoints=model.state_dict())
        test_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(Xt, yt), batch_size=len(yt))

        def dattri_side():
            attributor = peers["dattri"].IFAttributorExplicit(task, regularization=lam)
            attributor.cache(loader)
            out["dattri"] = attributor.attribute(loader, test_loader).detach().numpy()  # (n, m)
        sides["dattri"] = dattri_side

    for side in sides.values():
        side()  # warm-up, and the scores the differences are taken on
    seconds = round_robin_best_times(sides, repeats)
    expected = {"pydvl": -n * out["refsam"].T, "dattri": -n * out["refsam"]}  # docs/coming_from.md
    row = {"model": problem.model.name, "n": n, "d": problem.d, "m": len(y_test), "weight_decay": lam,
           "theta": where, "seconds": seconds, "max_abs_score": float(np.abs(expected["dattri"]).max()),
           "over_refsam": {}, "max_abs_diff": {}, "max_rel_diff": {}}
    for peer in sorted(sides.keys() - {"refsam"}):
        row["over_refsam"][peer] = seconds[peer] / seconds["refsam"]
        row["max_abs_diff"][peer] = float(np.abs(out[peer] - expected[peer]).max())
        row["max_rel_diff"][peer] = row["max_abs_diff"][peer] / row["max_abs_score"]
    return row


def run_peer_benchmarks(config: dict, log=print) -> dict:
    """Every size of ``config`` (a CONFIGS entry) against every installed peer; returns the JSON keys."""
    peers, skipped = _available()
    for peer, why in skipped.items():
        log(f"  peers: skipping {peer}: {why}")
    results: dict = {"peers_skipped": skipped}
    if not peers:
        return results
    problems = [(f"logistic_d{p + 1}", lambda p=p: logistic_problem(config["n"], p))
                for p in config["logistic_p"]]
    problems += [(None, lambda s=sizes: mlp_problem(config["mlp_n"], s)) for sizes in config["mlp_sizes"]]
    runs = {}
    for label, make in problems:
        problem, optimizer, X_test, y_test = make()
        label = label or f"mlp_d{problem.d}"
        log(f"  peers: {label}, n = {problem.n}, against {', '.join(peers)} ...")
        m = config["m"]  # the first m of the problem's held-out points
        run_steps = None if label.startswith("logistic") else config["mlp_steps"]
        runs[label] = bench_peers(problem, optimizer, X_test[:m], y_test[:m], peers, config["repeats"],
                                  run_steps)
    results["peers_runs"] = runs
    results["peers_versions"] = _versions(peers)
    for peer, key in (("pydvl", "pydvl_direct_over_refsam"), ("dattri", "dattri_explicit_over_refsam")):
        if peer in peers:
            results[key] = {label: run["over_refsam"][peer] for label, run in runs.items()}
    return results


def format_summary(results: dict) -> str:
    lines = [f"peers: {peer} skipped: {why}" for peer, why in results["peers_skipped"].items()]
    for label, r in results.get("peers_runs", {}).items():
        sides = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in r["seconds"].items())
        ratios = ", ".join(f"{peer} {ratio:.1f}x (max |diff| {r['max_abs_diff'][peer]:.1e}, relative "
                           f"{r['max_rel_diff'][peer]:.1e})"
                           for peer, ratio in r["over_refsam"].items())
        lines.append(f"peers {label}: n={r['n']} d={r['d']} m={r['m']}: {sides}; over refsam: {ratios}; "
                     f"largest |score| {r['max_abs_score']:.2e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from run import CONFIGS as RUN_CONFIGS  # the runner's sizes (run.py imports this module: import late)

    return topic_main(argv, __doc__.splitlines()[0],
                      lambda mode, log: run_peer_benchmarks(RUN_CONFIGS[mode]["peers"], log), format_summary)


if __name__ == "__main__":
    sys.exit(main())
