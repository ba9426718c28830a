"""``refsam train``: train with SAM on a seeded synthetic problem and print a summary;
``refsam verify RUN``: replay a saved run and report whether it reproduces itself."""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING, Any

from ..errors import DivergenceError, InvalidInputError
from .cases import add_progress_argument, progress_from_args
from .choices import DIRECTIONS, MODEL_NAMES, RULES

if TYPE_CHECKING:  # the library loads when the command runs, not when the parser is built (--help)
    from ..training import SGD


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train with SAM on synthetic data and print a summary")
    p.add_argument("--model", choices=MODEL_NAMES, default="logistic")
    p.add_argument("--n", type=int, default=200, help="training points (default 200)")
    p.add_argument("--features", type=int, default=5, help="input features (default 5)")
    p.add_argument("--classes", type=int, default=None,
                   help="classes for softmax/mlp (default 3; logistic has 2)")
    p.add_argument("--hidden", type=int, default=8, help="MLP hidden width (default 8)")
    p.add_argument("--rule", choices=RULES, default="sam")
    p.add_argument("--rho", type=float, default=0.05, help="SAM radius ρ (default 0.05)")
    p.add_argument("--direction", choices=DIRECTIONS, default="sam",
                   help="how the descent gradient mixes g and g^p: GSAM's or the gradient-norm penalty's "
                        "(needs --alpha; default sam: g^p)")
    p.add_argument("--alpha", type=float, default=None, help="α of --direction gsam or gnp")
    p.add_argument("--every", type=int, default=None,
                   help="interval SAM: a SAM step every K steps, plain steps between (default: every step)")
    add_optimizer_arguments(p, weight_decay=1e-2)
    p.add_argument("--l2", type=float, default=0.0,
                   help="λ of an L2 term in the loss, seen by the perturbation (default 0)")
    p.add_argument("--steps", type=int, default=500, help="SAM steps T (default 500)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default: full batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-bias-decay", action="store_true",
                   help="no weight decay and no L2 on the model's bias coordinates (per-coordinate λ)")
    p.add_argument("--save", default=None, help="write the trajectory to this .npz file (an existing "
                                                "file only if it is a refsam trajectory, or with --force)")
    p.add_argument("--force", action="store_true", help="let --save replace any existing file")
    add_progress_argument(p, "report every 10%% of the steps on stderr")
    p.set_defaults(func=run)

    p = subparsers.add_parser("verify", help="replay a saved run (refsam train --save) step by step and "
                                             "report the largest step residual")
    p.add_argument("run", metavar="RUN", help="a trajectory file written by refsam")
    p.add_argument("--data", default=None, metavar="FILE",
                   help=".npz with the training data X, y (default: the data the file carries)")
    add_progress_argument(p, "report every 10%% of the replayed steps on stderr")
    p.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    """Exit 0 if the run replays, 1 if it does not, 2 for a file that cannot be read."""
    from ..data.archive import read_npz
    from ..training import Trajectory

    trajectory = Trajectory.load(args.run)
    problem = None
    if args.data is not None:
        try:
            data = read_npz(args.data)
        except InvalidInputError as exc:
            raise InvalidInputError(f"--data {args.data!r}: cannot read it ({exc})") from None
        if "X" not in data or "y" not in data:
            raise InvalidInputError(f"--data {args.data!r} must hold arrays 'X' and 'y', got {sorted(data)}")
        problem = trajectory.problem(data["X"], data["y"])
    elif trajectory.training_data is None:
        raise InvalidInputError(f"RUN {args.run!r} does not carry its training data: pass --data FILE.npz "
                                f"with the arrays X and y it was trained on")
    check = trajectory.verify(problem, progress=progress_from_args(args))
    print(f"{args.run}: {trajectory!r}")
    print(check)
    return 0 if check.ok else 1


def add_optimizer_arguments(p: Any, weight_decay: float) -> None:
    """--lr, --momentum, --dampening, --nesterov, --weight-decay: the base optimizer, torch.optim.SGD's
    keywords; `optimizer_from_args()` makes them one refsam.SGD."""
    p.add_argument("--lr", type=float, default=0.5, help="learning rate η (default 0.5)")
    p.add_argument("--momentum", type=float, default=0.0,
                   help="momentum μ of the base optimizer, torch.optim.SGD semantics (default 0: plain SGD)")
    p.add_argument("--dampening", type=float, default=0.0, help="momentum dampening τ (default 0)")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (needs --momentum > 0)")
    p.add_argument("--weight-decay", type=float, default=weight_decay,
                   help=f"λ, the optimizer's weight decay, added at the unperturbed point (default "
                        f"{weight_decay:g})")


def optimizer_from_args(args: argparse.Namespace, mask: Any = None) -> SGD:
    """The one place the optimizer flags become an object: refsam.SGD(lr, momentum, dampening, nesterov,
    weight_decay), with λ_i = 0 where ``mask`` (bias coordinates) is True."""
    import numpy as np

    from ..training import SGD

    decay = args.weight_decay if mask is None else np.where(mask, 0.0, args.weight_decay)
    return SGD(args.lr, args.momentum, args.dampening, args.nesterov, decay)


def _check(args: argparse.Namespace) -> int:
    """The arguments only the CLI knows about (the rest are checked by the API); returns K."""
    if args.n < 2:
        raise InvalidInputError(f"--n must be >= 2, got {args.n}")
    if args.hidden < 1:
        raise InvalidInputError(f"--hidden must be >= 1, got {args.hidden}")
    if args.model == "logistic":
        if args.classes not in (None, 2):
            raise InvalidInputError(
                f"--classes {args.classes} does not fit --model logistic (2 classes); use softmax or mlp")
        _check_size(args, 2)
        return 2
    n_classes = 3 if args.classes is None else args.classes
    if n_classes < 2:
        raise InvalidInputError(f"--classes must be >= 2, got {n_classes}")
    _check_size(args, n_classes)
    return n_classes


def _check_size(args: argparse.Namespace, n_classes: int) -> None:
    """Refuse sizes whose recorded run (θ_0 … θ_T and ε_0 … ε_{T−1}, 8 bytes each) cannot fit in this
    machine's memory, naming the arguments, instead of a MemoryError (or the OOM killer) mid-run."""
    width = n_classes if args.model != "logistic" else 1
    hidden = max(args.hidden, 1) if args.model == "mlp" else 0
    d = ((args.features + 1) * hidden + (hidden + 1) * width) if args.model == "mlp" else \
        (args.features + 1) * width
    need = 8.0 * (2 * max(args.steps, 1) + 1) * max(d, 1) + 8.0 * max(args.n, 1) * max(args.features, 1)
    try:
        have = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return
    if need > have:
        raise InvalidInputError(f"--steps {args.steps}, --hidden {args.hidden}, --features {args.features} "
                                f"and --n {args.n} need {need / 2**30:.3g} GiB for the recorded run (d = {d} "
                                f"parameters, {args.steps} steps); this machine has {have / 2**30:.3g} GiB: "
                                f"lower them")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..apps.fitting import divergence
    from ..data import make_gaussian_classification
    from ..models import build_model
    from ..objective import Problem
    from ..sam import SAM
    from ..training import train
    from ..training.trajectory import check_writable, is_trajectory_file

    n_classes = _check(args)
    if args.save is not None:  # before the work: a bad --save fails in a second, not after training
        check_writable(args.save, args.force, is_trajectory_file, "--save")
    X, y, _ = make_gaussian_classification(args.n, args.features, n_classes, seed=args.seed)
    model = build_model(args.model, args.features, n_classes, args.hidden)
    biases = model.bias_mask(args.features) if args.no_bias_decay else None
    problem = Problem(model, X, y, l2=args.l2 if biases is None else np.where(biases, 0.0, args.l2))
    optimizer = optimizer_from_args(args, biases)
    sam = SAM(args.rho, args.rule, direction=args.direction, alpha=args.alpha, every=args.every)
    start = time.perf_counter()
    trajectory = train(problem, sam, optimizer, args.steps, batch_size=args.batch_size, seed=args.seed,
                       progress=progress_from_args(args))
    elapsed = time.perf_counter() - start
    reason = divergence(problem, trajectory)
    if reason:
        raise DivergenceError(f"{reason}; lower --lr (got {args.lr})")
    theta = trajectory.theta_final
    residual = problem.grad(theta) + (problem.l2 + optimizer.weight_decay) * theta
    accuracy = np.mean(model.predict_proba(theta, problem.X).argmax(axis=1) == problem.y)
    print(f"{problem!r}")
    print(f"{sam!r}, {optimizer!r}, steps={args.steps}, batch_size={args.batch_size}")
    print(f"trained in {elapsed:.2f} s")
    print(f"final objective F(θ_T)      = {float(problem.objective(theta)):.6f}")
    print(f"training accuracy           = {accuracy:.3f}")
    print(f"‖∇F(θ_T) + λθ_T‖ (ERM grad) = {np.linalg.norm(residual):.3e}  (λ: l2 + weight decay)")
    print(f"‖θ_T − θ_(T-1)‖             = {np.linalg.norm(theta - trajectory.thetas[-2]):.3e}")
    if args.save is not None:
        trajectory.save(args.save, overwrite=args.force, problem=problem)  # checked above; carries X, y
        print(f"trajectory written to {args.save}")
    return 0
