# ruff: noqa: E501  (a table reads best one row per line)
"""The bad-input matrix: every public entry point and every CLI command, given inputs it cannot use,
raises the documented exception type with a message naming the argument (``match=`` on its key words);
each CLI failure is one line on stderr, exit status 2, and happens before any work (nothing on stdout).

A coverage test requires a row for every public callable of ``refsam`` — a new entry point without a
row fails here.
"""

import os
import tempfile

import numpy as np
import pytest

import refsam
from refsam import apps, data, kit, training
from refsam.cli import main
from refsam.errors import InvalidInputError
from refsam.kit.files import CaseFileError

X, Y, _ = refsam.make_gaussian_classification(n=20, n_features=3, seed=0)
P = refsam.Problem(refsam.LogisticRegression(), X, Y)
S = refsam.SAM(0.05)
OPT = refsam.SGD(0.5, weight_decay=0.05)
T = refsam.train(P, S, OPT, 10, seed=0)
ROOT = refsam.solve_fixed_point(P, S, np.zeros(P.d), optimizer=OPT)
XT, YT = X[:3], Y[:3]
NAN = np.nan
LOG = refsam.LogisticRegression
SCRATCH = tempfile.mkdtemp(prefix="refsam-matrix-")  # a FIFO, a link and a folder for the rows below
os.mkfifo(os.path.join(SCRATCH, "fifo"))
os.symlink(os.path.join(SCRATCH, "elsewhere.npz"), os.path.join(SCRATCH, "link.npz"))
EDITED = refsam.Trajectory(T.thetas, T.epsilons, T.batches, T.lrs, T.weights, T.config)
EDITED.thetas[-1, 0] += 1e-3  # θ_T edited in place: a run that its replay does not reproduce
DEEP: dict = {}
_level = DEEP
for _ in range(100_000):  # a configuration nested deeper than Python's recursion limit
    _level["x"] = {}
    _level = _level["x"]
os.mkdir(os.path.join(SCRATCH, "deep"))
with open(os.path.join(SCRATCH, "deep", "manifest.json"), "w") as _fh:
    _fh.write("[" * 100_000)  # JSON nested deeper than Python's recursion limit
_deep_run = os.path.join(SCRATCH, "deep", "run.npz")
T.save(_deep_run)
with np.load(_deep_run) as _f:
    _arrays = {k: _f[k] for k in _f.files}
_arrays["config_json"] = np.array("[" * 100_000)
np.savez(_deep_run, **_arrays)
RHO_CHANGED = refsam.Trajectory(T.thetas, T.epsilons, T.batches, T.lrs, T.weights, {**T.config, "rho": 0.5})
SGD = refsam.SGD
BANK = refsam.counterfactual_bank(P, S, ROOT, XT, YT, n_subsets=2)

# (entry point, call, exception type, regex the message must match)
API_MATRIX = [
    # the SAM rule
    ("SAM", lambda: refsam.SAM(-0.1), InvalidInputError, r"`rho` must be a finite number >= 0, got -0.1"),
    ("SAM", lambda: refsam.SAM(NAN), InvalidInputError, r"`rho` must be a finite number >= 0, got nan"),
    ("SAM", lambda: refsam.SAM("a"), InvalidInputError, r"`rho` must be a real number"),
    ("SAM", lambda: refsam.SAM(0.1, "bogus"), InvalidInputError, r"`rule` must be one of .*got 'bogus'"),
    ("SAM", lambda: refsam.SAM(0.1, "asam", kappa=-1), InvalidInputError, r"`kappa` must be .*>= 0"),
    ("SAM", lambda: refsam.SAM(0.1, norm_eps=NAN), InvalidInputError, r"`norm_eps` must be a finite"),
    ("SAM", lambda: refsam.SAM(0.1, m_sharpness=0), InvalidInputError, r"`m_sharpness` must be an int >= 1"),
    ("SAM", lambda: refsam.SAM(0.1, t_mask=[[1, 2]]), InvalidInputError, r"`t_mask` must be a 1-d bool"),
    # models
    ("LogisticRegression", lambda: LOG(1.5), InvalidInputError, r"`label_smoothing` must lie in \[0, 1\)"),
    ("SoftmaxRegression", lambda: refsam.SoftmaxRegression(1), InvalidInputError, r"`n_classes` .* >= 2"),
    ("SoftmaxRegression", lambda: refsam.SoftmaxRegression("3"), InvalidInputError, r"`n_classes` .*'3'"),
    ("MLP", lambda: refsam.MLP([3]), InvalidInputError, r"`sizes` must list at least"),
    ("MLP", lambda: refsam.MLP([3, 4, 2], activation="relu6"), InvalidInputError,
     r"`activation` must be one of .*got 'relu6'"),
    ("model_from_spec", lambda: refsam.model_from_spec({"name": "nope"}), InvalidInputError,
     r"model spec `name` must be one of"),
    ("model_from_spec", lambda: refsam.model_from_spec("logistic"), InvalidInputError,
     r"`spec` must be a mapping .*got str"),
    ("model_from_spec", lambda: refsam.model_from_spec({"name": "softmax"}), InvalidInputError,
     r"lacks the key 'n_classes'"),
    # the problem
    ("Problem", lambda: refsam.Problem("logistic", X, Y), InvalidInputError, r"`model` must be a refsam model"),
    ("Problem", lambda: refsam.Problem(LOG(), X[:, 0], Y), InvalidInputError, r"`X` must be 2-dimensional"),
    ("Problem", lambda: refsam.Problem(LOG(), np.where(X > 1, NAN, X), Y), InvalidInputError,
     r"`X` must contain only finite values"),
    ("Problem", lambda: refsam.Problem(LOG(), np.where(X > 1, np.inf, X), Y), InvalidInputError,
     r"`X` must contain only finite values"),
    ("Problem", lambda: refsam.Problem(LOG(), [["a"]], [0]), InvalidInputError, r"`X` must be an array of real"),
    ("Problem", lambda: refsam.Problem(LOG(), np.empty((0, 3)), np.empty(0, int)), InvalidInputError,
     r"`X` must have at least one row"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y[:-1]), InvalidInputError, r"`y` must have shape \(20,\)"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y + 0.5), InvalidInputError, r"`y` must hold integer class"),
    ("Problem", lambda: refsam.Problem(LOG(), X, np.arange(20) % 3), InvalidInputError,
     r"`y` labels must lie in 0..1 for logistic"),
    ("Problem", lambda: refsam.Problem(refsam.SoftmaxRegression(3), X, -Y), InvalidInputError,
     r"`y` labels must lie in 0..2 for softmax"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, l2=-1), InvalidInputError, r"`l2` must be a finite number >= 0"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, l2=NAN), InvalidInputError, r"`l2` must be a finite number >= 0"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, l2="a"), InvalidInputError, r"`l2` must be a real number"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, l2=np.ones(2)), InvalidInputError,
     r"`l2` must have shape \(4\)"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, l2=np.ones((4, 1))), InvalidInputError,
     r"`l2` must have shape \(4\)"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, l2=[0.1, -1.0, 0.1, 0.0]), InvalidInputError,
     r"`l2` entries must be >= 0, got minimum -1.0"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, l2=[0.1, NAN, 0.1, 0.0]), InvalidInputError,
     r"`l2` must contain only finite"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, weights=-np.ones(20)), InvalidInputError,
     r"`weights` must be >= 0"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, weights=np.ones(3)), InvalidInputError,
     r"`weights` must have shape \(20\)"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, weights=np.full(20, NAN)), InvalidInputError,
     r"`weights` must contain only finite"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, 0.05), InvalidInputError,  # 0.1's positional λ
     r"`weights` must have shape \(20\), got \(\)"),
    # the base optimizer
    ("SGD", lambda: SGD(-1), InvalidInputError, r"`lr` must be a finite number > 0, got -1"),
    ("SGD", lambda: SGD(NAN), InvalidInputError, r"`lr` must be a finite number > 0, got nan"),
    ("SGD", lambda: SGD("a"), InvalidInputError, r"`lr` must be a real number"),
    ("SGD", lambda: SGD([0.5, 0.0]), InvalidInputError,
     r"`lr` must be a float > 0 or a non-empty array of floats > 0, got minimum 0.0"),
    ("SGD", lambda: SGD([]), InvalidInputError, r"`lr` must be a float > 0 or a non-empty array .*empty array"),
    ("SGD", lambda: SGD(np.ones((2, 2))), InvalidInputError, r"`lr` must be 1-dimensional"),
    ("SGD", lambda: SGD([0.5, NAN]), InvalidInputError, r"`lr` must contain only finite"),
    ("SGD", lambda: SGD(0.5, momentum=1.0), InvalidInputError, r"`momentum` must lie in \[0, 1\), got 1.0"),
    ("SGD", lambda: SGD(0.5, momentum=-0.1), InvalidInputError, r"`momentum` must be a finite number >= 0"),
    ("SGD", lambda: SGD(0.5, momentum=NAN), InvalidInputError, r"`momentum` must be a finite number >= 0"),
    ("SGD", lambda: SGD(0.5, momentum=0.9, dampening=2), InvalidInputError, r"`dampening` must lie in \[0, 1\]"),
    ("SGD", lambda: SGD(0.5, dampening=-1), InvalidInputError, r"`dampening` must be a finite number >= 0"),
    ("SGD", lambda: SGD(0.5, nesterov=True), InvalidInputError, r"`nesterov=True` needs `momentum` > 0"),
    ("SGD", lambda: SGD(0.5, momentum=0.9, nesterov="yes"), InvalidInputError,
     r"`nesterov` must be True or False, got 'yes'"),
    ("SGD", lambda: SGD(0.5, weight_decay=-1), InvalidInputError, r"`weight_decay` must be a finite number >= 0"),
    ("SGD", lambda: SGD(0.5, weight_decay=np.inf), InvalidInputError, r"`weight_decay` must be a finite number"),
    ("SGD", lambda: SGD(0.5, weight_decay=[0.1, -0.1]), InvalidInputError,
     r"`weight_decay` entries must be >= 0, got minimum -0.1"),
    ("SGD", lambda: SGD(0.5, weight_decay=np.ones((2, 2))), InvalidInputError, r"`weight_decay` must be 1-dimensional"),
    # training
    ("train", lambda: refsam.train(P, S, 0.5, 10), InvalidInputError,
     r"`optimizer` must be a refsam optimizer such as refsam.SGD\(lr, ...\), got float"),
    ("train", lambda: refsam.train(P, S, "sgd", 10), InvalidInputError, r"`optimizer` must be a refsam optimizer"),
    ("train", lambda: refsam.train(P, S, SGD(0.5, weight_decay=np.ones(2)), 10), InvalidInputError,
     r"the optimizer's per-coordinate `weight_decay` must have shape \(4,\)"),
    ("train", lambda: refsam.train(P, S, OPT), InvalidInputError, r"`steps` is required unless"),
    ("train", lambda: refsam.train(P, S, OPT, 10, clip_grad_norm=-1.0), InvalidInputError,
     r"`clip_grad_norm` must be a finite number > 0, got -1.0"),
    ("train", lambda: refsam.train(P, S, OPT, 10, clip_grad_norm="5"), InvalidInputError,
     r"`clip_grad_norm` must be None, a float > 0 \(torch's clip_grad_norm_\) or a refsam.GradientClipping, "
     r"got str"),
    ("train", lambda: refsam.train(P, S, OPT, 0), InvalidInputError, r"`steps` must be an int >= 1, got 0"),
    ("train", lambda: refsam.train(P, S, OPT, 2.5), InvalidInputError, r"`steps` must be an int >= 1, got 2.5"),
    ("train", lambda: refsam.train(P, S, SGD(np.ones(3)), 10), InvalidInputError,
     r"the optimizer's `lr` schedule has 3 rates; the run has 10 steps"),
    ("train", lambda: refsam.train(P, S, OPT, 10, batch_size=0), InvalidInputError, r"`batch_size` .* >= 1"),
    ("train", lambda: refsam.train(P, S, OPT, 10, batch_size=100), InvalidInputError,
     r"`batch_size` must be <= n=20"),
    ("train", lambda: refsam.train(P, S, OPT, 10, theta0=np.ones(2)), InvalidInputError,
     r"`theta0` must have shape \(4\)"),
    ("train", lambda: refsam.train(P, S, OPT, 10, theta0=np.full(P.d, NAN)), InvalidInputError,
     r"`theta0` must contain only finite"),
    ("train", lambda: refsam.train("p", S, OPT, 10), InvalidInputError, r"`problem` must be a refsam.Problem"),
    ("train", lambda: refsam.train(P, 0.05, OPT, 10), InvalidInputError, r"`sam` must be a refsam.SAM"),
    ("train", lambda: refsam.train(P, S, OPT, 10, seed=-1), InvalidInputError, r"`seed` must be None"),
    ("train", lambda: refsam.train(P, S, OPT, batches=[[0, 99]]), InvalidInputError,
     r"`batches\[0\]` must lie in 0..19"),
    ("train", lambda: refsam.train(P, S, OPT, batches=[[]]), InvalidInputError, r"`batches\[0\]` must be a non-empty"),
    ("train", lambda: refsam.train(P, S, OPT, 3, batches=[[0, 1]]), InvalidInputError,
     r"`steps` \(3\) must equal len\(batches\) \(1\)"),
    ("train", lambda: refsam.train(refsam.Problem(LOG(), np.zeros((2, 1)), [0, 1]), S, OPT, 2,
                                   theta0=np.zeros(2)), refsam.ZeroGradientError, r"gradient is exactly zero"),
    ("train", lambda: refsam.train(refsam.Problem(LOG(), 1e3 * np.eye(3), [0, 1, 0]), refsam.SAM(0.0), SGD(1e306),
                                   50),
     refsam.DivergenceError, r"training diverged at step \d+: .* lower the optimizer's `lr`"),
    ("replay", lambda: refsam.replay(P, T, weights=np.ones(3)), InvalidInputError, r"`weights` must have shape"),
    ("replay", lambda: refsam.replay(refsam.Problem(LOG(), X + 1, Y), T), InvalidInputError,
     r"`problem` does not match the trajectory: training data"),
    ("replay", lambda: refsam.replay(refsam.Problem(LOG(), X, Y, l2=0.05), T), InvalidInputError,
     r"`problem` does not match the trajectory"),
    ("preset", lambda: training.preset("nope", P, 0.1, 0.5), InvalidInputError, r"`name` must be one of .*'nope'"),
    ("preset", lambda: training.preset("jax-sam", "P", 0.1, 0.5), InvalidInputError, r"`problem` must be a refsam"),
    ("preset", lambda: training.preset("pytorch-sam", refsam.Problem(LOG(), X, Y, l2=0.1), 0.1, 0.5),
     InvalidInputError, r"places the weight decay itself: build `problem` without `l2`"),
    ("preset", lambda: training.preset("pytorch-sam", P, 0.1, -0.5), InvalidInputError,
     r"`lr` must be a finite number > 0"),
    ("preset", lambda: training.preset("pytorch-sam", P, 0.1, 0.5, momentum=0.9, nesterov=True,
                                       m_sharpness=2), InvalidInputError, r"`m_sharpness` applies to the 'jax-sam'"),
    ("Trajectory", lambda: refsam.Trajectory(np.ones((3, 2)), np.ones((1, 2)), [[0]], [1.0], [1.0], {}),
     InvalidInputError, r"Trajectory\(...\): `config` lacks keys"),
    ("Trajectory", lambda: refsam.Trajectory.load("/nonexistent/t.npz"), InvalidInputError,
     r"cannot read a trajectory from '/nonexistent/t.npz'"),
    ("Trajectory", lambda: T.save("/"), InvalidInputError, r"cannot write '/': it is a directory"),
    # issue 25: runs prove themselves; files are never written through links, FIFOs or None
    ("Trajectory", lambda: refsam.Trajectory.load(None), InvalidInputError, r"`path` must be a trajectory file name, got None"),
    ("Trajectory", lambda: T.save(None), InvalidInputError, r"`path` must be a file name, got None"),
    ("Trajectory", lambda: T.save(""), InvalidInputError, r"`path` must be a file name, got ''"),
    ("Trajectory", lambda: T.save(os.path.join(SCRATCH, "fifo")), InvalidInputError, r"is not a regular file \(a FIFO"),
    ("Trajectory", lambda: refsam.Trajectory.load(os.path.join(SCRATCH, "fifo")), InvalidInputError,
     r"cannot read a trajectory from .*fifo': it is not a regular file"),
    ("Trajectory", lambda: refsam.Trajectory.load(SCRATCH), InvalidInputError, r"it is a directory, not a file"),
    ("Trajectory", lambda: T.save(os.path.join(SCRATCH, "link.npz")), InvalidInputError,
     r"refusing to write .*link.npz': it is a symbolic link"),
    ("Trajectory", lambda: T.verify(), InvalidInputError, r"Trajectory.verify\(\): pass the `problem`"),
    ("Trajectory", lambda: refsam.Trajectory(T.thetas, T.epsilons, T.batches, T.lrs, T.weights, {**T.config, "x": DEEP}),
     InvalidInputError, r"Trajectory\(...\): `config` is nested too deeply"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, EDITED, XT, YT), refsam.UnverifiedRunError,
     r"trajectory_influence: `trajectory` is not a run of `problem`: the run does NOT replay: largest step "
     r"residual .* \(thetas at step 10; .*pass verify=False"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, RHO_CHANGED, XT, YT), refsam.UnverifiedRunError,
     r"does NOT replay: largest step residual .*\(epsilons at step \d+"),
    ("trajectory_parameter_influence", lambda: refsam.trajectory_parameter_influence(P, EDITED),
     refsam.UnverifiedRunError, r"trajectory_parameter_influence: `trajectory` is not a run of `problem`"),
    ("trajectory_self_influence", lambda: refsam.trajectory_self_influence(P, EDITED),
     refsam.UnverifiedRunError, r"trajectory_self_influence: `trajectory` is not a run of `problem`"),
    ("trajectory_self_influence", lambda: refsam.trajectory_self_influence(P, T, method="x"),
     InvalidInputError, r"`method` must be one of \['adjoint', 'forward', 'autodiff', 'first_order'"),
    ("trajectory_self_influence", lambda: refsam.trajectory_self_influence(P, T, progress="yes"),
     InvalidInputError, r"`progress` must be True, False or None"),
    ("trajectory_hyperparameter_sensitivity", lambda: refsam.trajectory_hyperparameter_sensitivity(P, EDITED),
     refsam.UnverifiedRunError, r"trajectory_hyperparameter_sensitivity: `trajectory` is not a run"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, XT, YT, verify="no"), InvalidInputError,
     r"`verify` must be True or False, got 'no'"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, None, None), InvalidInputError,
     r"`X_test` must be an array of real numbers, got None"),
    ("hessian_influence", lambda: refsam.hessian_influence(P, S, ROOT, None, None), InvalidInputError,
     r"`X_test` must be an array of test points, got None"),
    ("Problem", lambda: refsam.Problem(LOG(), X, np.full(20, 1e20)), InvalidInputError,
     r"`y` labels must lie in 0..1 for logistic, got values in 1e\+20..1e\+20"),
    ("leave_one_out_replay", lambda: refsam.leave_one_out_replay(P, T, XT, YT, indices=np.zeros((30, 30), int)),
     InvalidInputError, r"`indices` must be a non-empty 1-d array of ints, got an array of shape \(30, 30\)"),
    ("train", lambda: refsam.train(P, S, OPT, batches=[np.zeros((10, 10), int)]), InvalidInputError,
     r"`batches\[0\]` must be a non-empty 1-d array of ints, got an array of shape \(10, 10\)"),
    ("SGD", lambda: SGD(np.array([0.5, -1.0])), InvalidInputError, r"`lr` must be a float > 0 or a non-empty "
     r"array of floats > 0, got minimum -1.0"),
    ("Adam", lambda: refsam.Adam(amsgrad=True), InvalidInputError, r"`amsgrad=True` is not supported by Adam"),
    ("Adam", lambda: refsam.Adam(eps=0.0), InvalidInputError, r"`eps` and `eps_root` are both 0"),
    ("AdamW", lambda: refsam.AdamW(betas=(0.9, 1.0)), InvalidInputError,
     r"`betas` must be two floats in \[0, 1\), got \(0.9, 1.0\)"),
    ("GradientClipping", lambda: refsam.GradientClipping(5.0, "keras"), InvalidInputError,
     r"`convention` must be one of"),
    ("GradientClipping", lambda: refsam.GradientClipping(0.0), InvalidInputError,
     r"`clip_grad_norm` must be a finite number > 0, got 0.0"),
    ("export_cases", lambda: kit.export_cases(None), CaseFileError, r"`directory` must be a folder name, got None"),
    ("export_cases", lambda: kit.export_cases(os.path.join(SCRATCH, "link.npz"), cases="logistic-sam-weight_decay-full"),
     CaseFileError, r"refusing to export into .*link.npz': it is a symbolic link"),
    ("check_scores", lambda: kit.check_scores(os.path.join(SCRATCH, "deep"), {}), CaseFileError,
     r"manifest.json: not a manifest \(JSON nested too deeply\)"),
    ("Trajectory", lambda: refsam.Trajectory.load(_deep_run), InvalidInputError,
     r"trajectory file .*run.npz' has an unreadable config_json"),
    ("check_scores", lambda: kit.check_scores(None, {}), CaseFileError, r"`directory` must be a case directory path, got None"),
    ("read_scores", lambda: kit.read_scores(None), CaseFileError, r"`scores` must be an .npz path or a dict of arrays, got None"),
    ("read_scores", lambda: kit.read_scores(SCRATCH), CaseFileError, r"scores file .* is a directory, not an .npz file"),
    ("load_csv", lambda: data.load_csv(None), InvalidInputError, r"`path` of a CSV file must be a str or os.PathLike, got NoneType"),
    ("load_csv", lambda: data.load_csv(SCRATCH), InvalidInputError, r"cannot read CSV file .*: it is a directory, not a file"),
    ("load_npz", lambda: data.load_npz(SCRATCH), InvalidInputError, r"cannot read NPZ file .*: it is a directory, not a file"),
    # trajectory influence and its ground truth
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, XT, YT, method="tracin", last_steps=2),
     InvalidInputError, r"`last_steps` truncates the adjoint recursion: it needs method='adjoint'"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, XT, YT, "tracin", checkpoints=99),
     InvalidInputError, r"`checkpoints` must be at most the run's 10 steps, got 99"),
    ("trajectory_hyperparameter_sensitivity", lambda: refsam.trajectory_hyperparameter_sensitivity(P, "run"),
     InvalidInputError, r"`trajectory` must be a refsam.Trajectory"),
    ("trajectory_hyperparameter_sensitivity", lambda: refsam.trajectory_hyperparameter_sensitivity(
        refsam.Problem(LOG(), X, Y, l2=0.1), T), InvalidInputError, r"does not match the trajectory"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, XT, YT, method="nope"), InvalidInputError,
     r"`method` must be one of \['adjoint'"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, XT[:, :2], YT), InvalidInputError,
     r"`X_test` must have shape \(m >= 1, 3\)"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, XT, YT[:2]), InvalidInputError,
     r"`y_test` must have shape \(3,\)"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, np.full((3, 3), NAN), YT),
     InvalidInputError, r"`X_test` must contain only finite"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, "t", XT, YT), InvalidInputError,
     r"`trajectory` must be a refsam.Trajectory"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, np.empty((0, 3)), np.empty(0, int)),
     InvalidInputError, r"`X_test` must have shape \(m >= 1, 3\)"),
    ("trajectory_parameter_influence", lambda: refsam.trajectory_parameter_influence(P, T, method="x"),
     InvalidInputError, r"`method` must be one of \['adjoint', 'forward', 'autodiff'\]"),
    ("finite_difference_replay", lambda: refsam.finite_difference_replay(P, T, XT, YT, h=-1), InvalidInputError,
     r"`h` must be a finite number > 0"),
    ("finite_difference_replay", lambda: refsam.finite_difference_replay(P, T, XT, YT, h=1e-300),
     InvalidInputError, r"`h` = 1e-300 is too small"),
    ("leave_one_out_replay", lambda: refsam.leave_one_out_replay(P, T, XT, YT, indices=[[0]]), InvalidInputError,
     r"`indices` must be a non-empty 1-d array of ints"),
    ("leave_one_out_replay", lambda: refsam.leave_one_out_replay(P, T, XT, YT, n_jobs=0), InvalidInputError,
     r"`n_jobs` must be an int >= 1, or -1"),
    ("leave_one_out", lambda: refsam.leave_one_out(P, S, ROOT, XT, YT, executor=4), InvalidInputError,
     r"`executor` must be a concurrent.futures.Executor"),
    ("export_cases", lambda: kit.export_cases("/tmp/never-written", n_jobs=1.5), InvalidInputError,
     r"`n_jobs` must be an int >= 1"),
    # closed form, root and its ground truth
    ("hessian_influence", lambda: refsam.hessian_influence(P, S, ROOT, XT, YT, solver="lu"), InvalidInputError,
     r"`solver` must be one of .*got 'lu'"),
    ("hessian_influence", lambda: refsam.hessian_influence(P, S, ROOT, XT, YT, solver="cg"), InvalidInputError,
     r"solver='cg' needs a symmetric system"),
    ("hessian_influence", lambda: refsam.hessian_influence(P, S, ROOT, XT, YT, solver="gmres", depth=3),
     InvalidInputError, r"solver='gmres' takes the options .*got depth"),
    ("hessian_influence", lambda: refsam.hessian_influence(P, S, ROOT, XT, YT, curvature="diag"), InvalidInputError,
     r"`curvature` must be one of .*got 'diag'"),
    ("system_operators", lambda: refsam.system_operators("p", S, ROOT), InvalidInputError,
     r"`problem` must be a refsam.Problem"),
    ("system_operators", lambda: refsam.system_operators(P, S, ROOT, variant="x"), InvalidInputError,
     r"`variant` must be one of"),
    ("system_operators", lambda: refsam.system_operators(P, S, ROOT, curvature="x"), InvalidInputError,
     r"`curvature` must be one of"),
    ("trak_influence", lambda: refsam.trak_influence(P, ROOT, XT, YT, 0), InvalidInputError,
     r"`dimension` must be an int >= 1"),
    ("trak_influence", lambda: refsam.trak_influence(P, ROOT, XT, YT, 99), InvalidInputError,
     r"`dimension` must be at most d = 4"),
    ("trak_influence", lambda: refsam.trak_influence(P, np.ones(2), XT, YT, 2), InvalidInputError, r"`theta`"),
    ("hessian_influence", lambda: refsam.hessian_influence(P, S, ROOT, XT, YT, variant="x"), InvalidInputError,
     r"`variant` must be one of \['erm', 'frozen', 'full'\]"),
    ("hessian_influence", lambda: refsam.hessian_influence(P, S, np.ones(P.d), XT, YT), refsam.UnverifiedRootError,
     r"`theta` is not a verified root"),
    ("hessian_influence", lambda: refsam.hessian_influence(P, S, np.ones(2), XT, YT), InvalidInputError,
     r"`theta` must have shape \(4\)"),
    ("hessian_influence", lambda: refsam.hessian_influence(P, S, ROOT, XT, YT, root_tol=-1), InvalidInputError,
     r"`root_tol` must be a finite number > 0"),
    ("hessian_influence", lambda: refsam.hessian_influence(P, S, ROOT, XT, YT, on_unverified="x"),
     InvalidInputError, r"`on_unverified` must be one of"),
    ("parameter_influence", lambda: refsam.parameter_influence(P, S, ROOT, variant="x"), InvalidInputError,
     r"`variant` must be one of"),
    ("self_influence", lambda: refsam.self_influence(P, S, np.ones(P.d)), refsam.UnverifiedRootError,
     r"`theta` is not a verified root"),
    ("hyperparameter_sensitivity", lambda: refsam.hyperparameter_sensitivity(P, S, np.ones(P.d)),
     refsam.UnverifiedRootError, r"`theta` is not a verified root"),
    ("solve_fixed_point", lambda: refsam.solve_fixed_point(P, S, np.zeros(P.d), tol=0), InvalidInputError,
     r"`tol` must be a finite number > 0"),
    ("solve_fixed_point", lambda: refsam.solve_fixed_point(P, S, np.zeros(P.d), max_iter=0), InvalidInputError,
     r"`max_iter` must be an int >= 1"),
    ("solve_fixed_point", lambda: refsam.solve_fixed_point(P, S, np.zeros(P.d), method="x"), InvalidInputError,
     r"`method` must be one of \['auto'"),
    ("solve_fixed_point", lambda: refsam.solve_fixed_point(P, S, np.zeros(2)), InvalidInputError,
     r"`theta0` must have shape \(4\)"),
    ("solve_fixed_point", lambda: refsam.solve_fixed_point(P, S, np.zeros(P.d), optimizer=0.5), InvalidInputError,
     r"`optimizer` must be a refsam optimizer"),
    ("solve_fixed_point", lambda: refsam.solve_fixed_point(P, S, np.zeros(P.d), optimizer=SGD(0.5, weight_decay=[1.0])),
     InvalidInputError, r"per-coordinate `weight_decay` must have shape \(4,\)"),
    ("fixed_point_diagnostics", lambda: refsam.fixed_point_diagnostics(P, S, ROOT.theta, optimizer="sgd"),
     InvalidInputError, r"`optimizer` must be a refsam optimizer"),
    ("fixed_point_diagnostics", lambda: refsam.fixed_point_diagnostics(P, S, np.full(P.d, NAN)),
     InvalidInputError, r"`theta` must contain only finite"),
    ("residual_map", lambda: refsam.residual_map(P, S, np.ones(2)), InvalidInputError, r"`theta` must have shape"),
    ("residual_jacobian", lambda: refsam.residual_jacobian(P, S, ROOT.theta, weights=np.ones(2)),
     InvalidInputError, r"`weights` must have shape \(20\)"),
    ("residual_weight_jacobian", lambda: refsam.residual_weight_jacobian(P, S, np.full(P.d, np.inf)),
     InvalidInputError, r"`theta` must contain only finite"),
    ("finite_difference_influence", lambda: refsam.finite_difference_influence(P, S, ROOT, XT, YT, indices=[99]),
     InvalidInputError, r"`indices` must lie in 0..19"),
    ("finite_difference_influence", lambda: refsam.finite_difference_influence(P, S, ROOT, XT, YT, h=0),
     InvalidInputError, r"`h` must be a finite number > 0"),
    ("leave_one_out", lambda: refsam.leave_one_out(P, S, ROOT, XT, YT, indices=[0.5]), InvalidInputError,
     r"`indices` must be a non-empty 1-d array of ints"),
    ("leave_one_out", lambda: refsam.leave_one_out(P, S, ROOT, XT, YT, indices=[-1]), InvalidInputError,
     r"`indices` must lie in 0..19, got values in -1..-1"),
    # data
    ("make_gaussian_classification", lambda: refsam.make_gaussian_classification(flip_fraction=2),
     InvalidInputError, r"`flip_fraction` must lie in \[0, 1\]"),
    ("make_gaussian_classification", lambda: refsam.make_gaussian_classification(n_classes=1), InvalidInputError,
     r"`n_classes` must be an int >= 2"),
    ("load_dataset", lambda: data.load_dataset("nope"), InvalidInputError, r"unknown dataset 'nope'"),
    ("load_dataset", lambda: data.load_dataset("synthetic", n=2), InvalidInputError, r"`n` must be an int >= 4"),
    ("load_dataset", lambda: data.load_dataset(3), InvalidInputError, r"`source` must be a dataset name"),
    ("load_csv", lambda: data.load_csv("/nonexistent.csv"), InvalidInputError,
     r"cannot read CSV file '/nonexistent.csv': FileNotFoundError"),
    ("load_npz", lambda: data.load_npz("/nonexistent.npz"), InvalidInputError, r"cannot read NPZ file"),
    ("flip_labels", lambda: data.flip_labels(Y, 2, 1.5), InvalidInputError, r"`fraction` must lie in \[0, 1\]"),
    ("train_test_split", lambda: data.train_test_split(data.load_dataset(), 1.5), InvalidInputError,
     r"`test_fraction` must lie in \(0, 1\)"),
    # oracle kit
    ("export_cases", lambda: kit.export_cases("/tmp/never-written", cases="zzz"), InvalidInputError,
     r"`cases` pattern 'zzz' matches no case"),
    ("check_scores", lambda: kit.check_scores("/nonexistent", {}), CaseFileError,
     r"case directory '/nonexistent' does not exist"),
    ("check_scores", lambda: kit.check_scores(".", {}, target="x"), InvalidInputError, r"`target` must be one of"),
    ("read_scores", lambda: kit.read_scores("/nonexistent.npz"), CaseFileError, r"scores file .* does not exist"),
    ("load_case", lambda: kit.load_case("/nonexistent", "x"), CaseFileError, r"case directory .* does not exist"),
    # counterfactual banks and the LDS
    ("counterfactual_bank", lambda: refsam.counterfactual_bank(P, S, ROOT, XT, YT, subset_ratio=0), InvalidInputError,
     r"`subset_ratio` must be a number in \(0, 1\] \(the kept fraction\), got 0"),
    ("counterfactual_bank", lambda: refsam.counterfactual_bank(P, S, T, XT, YT, kind="retrain", seeds=[]),
     InvalidInputError, r"`seeds` must be a non-empty sequence of ints"),
    ("CounterfactualBank", lambda: BANK.save(__file__), InvalidInputError,
     r"cannot write a bank into .*: it is a file; give a directory"),
    ("load_bank", lambda: refsam.load_bank("/nonexistent.npz"), InvalidInputError,
     r"bank file '/nonexistent.npz' does not exist"),
    ("merge_bank_shards", lambda: refsam.merge_bank_shards([]), InvalidInputError, r"`shards` is empty"),
    ("merge_bank_shards", lambda: refsam.merge_bank_shards([BANK]), InvalidInputError,
     r"`shards` holds a whole bank, not a shard"),
    ("lds", lambda: refsam.lds(np.zeros((3, 20)), BANK), InvalidInputError,
     r"`scores` must have shape \(n_train, n_queries\) = \(20, 3\) like the bank, got \(3, 20\); transpose it"),
    ("lds", lambda: refsam.lds(np.zeros((20, 3)), P), InvalidInputError, r"`bank` must be a refsam CounterfactualBank"),
    ("group_effects", lambda: refsam.group_effects(np.zeros((20, 3)), BANK, sizes=[0]), InvalidInputError,
     r"`sizes` entries must lie in 1..19"),
    ("export_bank", lambda: refsam.export_bank(BANK, "/tmp/never-written", "pytorch"), InvalidInputError,
     r"`fmt` must be one of \['dattri', 'trak', 'kronfluence'\]"),
    ("import_bank", lambda: refsam.import_bank("/nonexistent", "trak"), InvalidInputError,
     r"'/nonexistent/masks.npy' does not exist"),
    # applications
    ("apps.fit", lambda: apps.fit(P, S, -1, 10), InvalidInputError, r"`optimizer` must be a refsam optimizer"),
    ("apps.tune", lambda: apps.tune(P, XT, YT, 0.5), InvalidInputError, r"`optimizer` must be a refsam optimizer"),
    ("apps.tune", lambda: apps.tune(P, XT, YT, OPT, penalty="coupled"), InvalidInputError,
     r"`penalty` must be one of"),
    ("apps.tune", lambda: apps.tune(P, XT, YT, SGD(0.5, weight_decay=np.ones(P.d))), InvalidInputError,
     r"the weight_decay to tune is per coordinate"),
    ("apps.detect_mislabeled", lambda: apps.detect_mislabeled(None, "x"), InvalidInputError,
     r"`fit_` must be a refsam.apps.Fit"),
    ("apps.remove_harmful", lambda: apps.remove_harmful(P, XT, YT, 2), InvalidInputError,
     r"`fit_` must be a refsam.apps.Fit .*got Problem"),
    ("apps.explain_prediction", lambda: apps.explain_prediction(T, XT[0], 0), InvalidInputError,
     r"`fit_` must be a refsam.apps.Fit"),
    ("apps.resolve_method", lambda: apps.resolve_method("x"), InvalidInputError, r"`method` must be one of"),
    ("apps.auroc", lambda: apps.auroc(np.ones(3), np.ones(2, bool)), InvalidInputError,
     r"`flipped` must have shape \(3,\)"),
]


@pytest.mark.parametrize("entry, call, error, message", API_MATRIX,
                         ids=[f"{row[0]}-{i}" for i, row in enumerate(API_MATRIX)])
def test_api_bad_input(entry, call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    assert isinstance(info.value, refsam.RefsamError)
    assert "\n" not in str(info.value).strip()  # one line


def test_every_public_callable_has_a_row():
    # returned, not called with input; or a base class to subclass (Model, Optimizer)
    result_types = {"FixedPoint", "HyperparameterSensitivity", "Model", "Optimizer", "SolveInfo"}
    public = {name for name in refsam.__all__ if callable(getattr(refsam, name))
              and not (isinstance(getattr(refsam, name), type) and issubclass(getattr(refsam, name), BaseException))}
    covered = {row[0] for row in API_MATRIX}
    assert sorted(public - result_types - covered) == []


CLI_MATRIX = [
    (["train", "--steps", "0"], r"`steps` must be an int >= 1, got 0"),
    (["train", "--lr", "-1"], r"`lr` must be a finite number > 0"),
    (["train", "--lr", "nan"], r"`lr` must be a finite number > 0, got nan"),
    (["train", "--rho", "-1"], r"`rho` must be a finite number >= 0"),
    (["train", "--rule", "x"], r"argument --rule: invalid choice: 'x' .*\(see refsam train --help\)"),
    (["train", "--direction", "x"], r"argument --direction: invalid choice: 'x'"),
    (["train", "--direction", "gsam"], r"direction='gsam' needs `alpha` \(its α\), got None"),
    (["train", "--alpha", "0.5"], r"`alpha` applies to direction='gsam' or 'gnp' only"),
    (["train", "--direction", "gnp", "--alpha", "nan"], r"`alpha` must be a finite real number, got nan"),
    (["train", "--every", "0"], r"`every` must be an int >= 1, got 0"),
    (["train", "--model", "x"], r"argument --model: invalid choice"),
    (["train", "--n", "1"], r"--n must be >= 2, got 1"),
    (["train", "--classes", "1", "--model", "softmax"], r"--classes must be >= 2, got 1"),
    (["train", "--classes", "3"], r"--classes 3 does not fit --model logistic"),
    (["train", "--features", "0"], r"`n_features` must be an int >= 1"),
    (["train", "--hidden", "0", "--model", "mlp"], r"--hidden must be >= 1, got 0"),
    (["train", "--batch-size", "0"], r"`batch_size` must be an int >= 1"),
    (["train", "--batch-size", "1000"], r"`batch_size` must be <= n=200"),
    (["train", "--momentum", "1.5"], r"`momentum` must lie in \[0, 1\)"),
    (["train", "--nesterov"], r"`nesterov=True` needs `momentum` > 0"),
    (["train", "--dampening", "2"], r"`dampening` must lie in \[0, 1\]"),
    (["train", "--weight-decay", "-1"], r"`weight_decay` must be a finite number >= 0"),
    (["train", "--seed", "-1"], r"`seed` must be None, an int >= 0"),
    (["train", "--steps", "abc"], r"argument --steps: invalid int value: 'abc'"),
    (["train", "--regularization", "coupled"], r"unrecognized arguments: --regularization coupled"),  # 0.1's
    (["train", "--l2", "-1"], r"`l2` must be a finite number >= 0, got -1.0"),
    (["train", "--l2", "nan"], r"`l2` must be a finite number >= 0, got nan"),
    (["train", "--l2", "x"], r"argument --l2: invalid float value: 'x'"),
    (["train", "--dampening", "-0.5"], r"`dampening` must be a finite number >= 0"),
    (["train", "--nesterov", "--momentum", "0.9", "--dampening", "1.5"], r"`dampening` must lie in \[0, 1\]"),
    (["train", "--bogus"], r"unrecognized arguments: --bogus"),
    (["train", "--save", "{tmp}/mine.txt"], r"refusing to overwrite .*mine.txt': refsam did not write it"),
    (["train", "--save", "{tmp}"], r"cannot write .*: it is a directory"),
    (["train", "--save", "{tmp}/nodir/x.npz"], r"cannot write .*x.npz': the folder .* does not exist"),
    (["export-cases"], r"the following arguments are required: DIR"),
    (["export-cases", "{tmp}/c", "--cases", "zzz"], r"`cases` pattern 'zzz' matches no case"),
    (["export-cases", "{tmp}/mine.txt"], r"cannot create the case directory"),
    (["export-cases", "{tmp}/c", "--jobs", "0"], r"--jobs must be >= 1, or -1 for every CPU, got 0"),
    (["demo", "--jobs", "-2"], r"--jobs must be >= 1, or -1 for every CPU, got -2"),
    (["check", "{tmp}/nodir", "--scores", "s.npz"], r"case directory .*nodir' does not exist"),
    (["check", "{tmp}", "--scores", "s.npz"], r"manifest.json is missing: .* is not a case directory"),
    (["check", "{tmp}/mine.txt", "--scores", "s.npz"], r"case directory .*mine.txt' is not a directory"),
    (["demo", "--steps", "0"], r"--steps must be >= 1, got 0"),
    (["demo", "--flip", "1"], r"--flip must lie in \[0, 1\), got 1.0"),
    (["demo", "--methods", "x"], r"--methods must be a comma-separated subset of"),
    (["demo", "--dataset", "nope"], r"unknown dataset 'nope'"),
    (["demo", "--dataset", "{tmp}/mine.txt"], r"unknown dataset .*mine.txt'.*a path ending in .csv/.npz"),
    (["demo", "--n", "2"], r"--n must be >= 4, got 2"),
    (["demo", "--subset", "0"], r"`subset` must be an int >= 1, got 0"),
    (["demo", "--pca", "0"], r"`n_components` must be an int >= 1"),
    (["demo", "--lr", "0"], r"`--lr` must be a finite number > 0, got 0.0"),
    (["demo", "--weight-decay", "nan"], r"`--weight-decay` must be a finite number >= 0, got nan"),
    (["demo", "--out", "{tmp}/mine.txt"], r"`--out` .* is a file, not a directory"),
    (["detect", "--top", "0"], r"--top must be >= 1, got 0"),  # (--flip 0 ranks unknown data: issue 26)
    (["detect", "--protocols", "--dataset", "{tmp}/d.csv"], r"no flipped labels to detect: use --flip > 0"),
    (["detect", "--out", "{tmp}/mine.txt"], r"`--out` .*mine.txt' is a file, not a directory"),
    (["edit", "--methods", "closed_form"], r"edit uses one exact method: --method METHOD \(got --methods"),
    (["detect", "--methods", ""], r"--methods must be a comma-separated subset of"),
    (["detect", "--rho", "-1"], r"`--rho` must be a finite number >= 0"),
    (["detect", "--momentum", "2"], r"`momentum` must lie in \[0, 1\)"),
    (["remove", "--k", "0"], r"--k must be >= 1, got 0"),
    (["remove", "--random-trials", "-1"], r"--random-trials must be >= 0, got -1"),
    (["remove", "--lr", "inf"], r"`--lr` must be a finite number > 0, got inf"),
    (["explain", "--index", "-5"], r"--index must lie in 0..49 \(validation points\), got -5"),
    (["explain", "--index", "9999"], r"--index must lie in 0..49"),
    (["explain", "--k", "0"], r"--k must be >= 1, got 0"),
    (["tune", "--val-fraction", "0"], r"--val-fraction must lie in \(0, 1\), got 0.0"),
    (["tune", "--grid", "1"], r"--grid must be 0 \(no grid\) or >= 2, got 1"),
    (["tune", "--max-trainings", "0"], r"--max-trainings must be >= 1, got 0"),
    (["tune", "--rho", "0.9"], r"the start --rho 0.9 --weight-decay 0.01 must lie in rho \[1e-3, 0.2\]"),
    (["tune", "--rho-max", "-1"], r"`--rho-max` must be a finite number > 0"),
    (["tune", "--batch-size", "9999"], r"--batch-size must be <= the 200 training points, got 9999"),
    (["tune", "--momentum", "0.9", "--nesterov", "--dampening", "3"], r"`dampening` must lie in \[0, 1\]"),
    (["tune", "--momentum", "-0.9"], r"`momentum` must be a finite number >= 0"),
    (["tune", "--out", "{tmp}/mine.txt"], r"--out"),
    (["edit", "--index", "9999"], r"--index must lie in 0..49 \(validation points\), got 9999"),
    (["edit", "--max-remove", "0"], r"--max-remove must be >= 1, got 0"),
    (["edit", "--target", "7"], r"--target must be a class in 0..1, got 7"),
    (["remove", "--ks", "a,b"], r"--ks must be a comma-separated list of removal counts >= 0, got 'a,b'"),
    (["remove", "--ks", "-3"], r"--ks must be a comma-separated list of removal counts >= 0"),
    (["detect", "--protocols", "--flip", "0"], r"no flipped labels to detect: use --flip > 0"),
    (["bank", "--out", "{tmp}/b", "--subset-ratio", "0"], r"--subset-ratio must lie in \(0, 1\], got 0.0"),
    (["bank", "--out", "{tmp}/b", "--subsets", "1"], r"--subsets must be >= 2, got 1"),
    (["bank", "--out", "{tmp}/b", "--shard", "2/2"], r"--shard I/N needs 0 <= I < N, got '2/2'"),
    (["bank", "--out", "{tmp}/mine.txt"], r"--out .*mine.txt' is a file; give a directory"),
    (["bank"], r"--out DIR is required"),
    (["bank", "merge", "{tmp}"], r"no bank shards \(shard-\*.npz\) in"),
    (["lds", "--bank", "{tmp}", "--scores", "s.npy"], r"holds no bank \(bank.npz\)"),
    (["lds", "--bank", "{tmp}"], r"the following arguments are required: --scores"),
    (["bogus"], r"argument COMMAND: invalid choice: 'bogus'"),
    # issue 25
    (["verify"], r"the following arguments are required: RUN"),
    (["verify", "{tmp}/none.npz"], r"cannot read a trajectory from .*none.npz': FileNotFoundError"),
    (["verify", "{tmp}/mine.txt"], r"cannot read a trajectory from .*mine.txt'"),
    (["verify", "{tmp}"], r"cannot read a trajectory from .*: it is a directory, not a file"),
    (["train", "--save", ""], r"`--save` must be a file name, got ''"),
    (["train", "--save", "{tmp}/link.npz"], r"refusing to write .*link.npz': it is a symbolic link"),
    (["train", "--steps", "1000000000000"], r"--steps 1000000000000, --hidden 8, --features 5 and --n 200 need "
                                             r".* GiB for the recorded run .*this machine has .* GiB: lower them"),
    (["train", "--model", "mlp", "--hidden", "1000000000"], r"--hidden 1000000000.* GiB for the recorded run"),
    (["export-cases", "{tmp}/link.npz"], r"refusing to export into .*link.npz': it is a symbolic link"),
    (["export-cases", "{tmp}", "--cases", "logistic-sam-weight_decay-full"],
     r"refusing to overwrite .*logistic-sam-weight_decay-full.npz': refsam did not write it"),
    (["remove", "--ks", "5,9999"], r"--ks must list removal counts below the 200 training points, got 9999"),
    (["detect", "--out", "{tmp}"], r"refusing to overwrite .*detection_curves.png': refsam did not write it"),
    (["demo", "--out", "{tmp}"], r"refusing to overwrite .*loo_scatter.png': refsam did not write it"),
    (["check", "{tmp}", "--scores", "{tmp}"], r"manifest.json is missing"),
]


@pytest.mark.parametrize("argv, message", CLI_MATRIX, ids=[" ".join(row[0]) for row in CLI_MATRIX])
def test_cli_bad_input(argv, message, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("precious\n")
    (tmp_path / "d.csv").write_text("0.5,a\n1.5,b\n2.5,a\n3.5,b\n0.1,a\n")
    (tmp_path / "link.npz").symlink_to(tmp_path / "mine.txt")  # a link refsam must not write through
    for name in ("logistic-sam-weight_decay-full.npz", "detection_curves.png", "loo_scatter.png"):
        (tmp_path / name).write_text("precious\n")  # a user's files at the names refsam would write
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line: no traceback, no usage block, no progress before the error
    assert lines[0].startswith(f"refsam {argv[0]}: error: ") or lines[0].startswith("refsam: error: ")
    assert out == ""  # refused before any work
    assert __import__("re").search(message, lines[0]), lines[0]
    assert (tmp_path / "mine.txt").read_text() == "precious\n"
    assert (tmp_path / "link.npz").is_symlink()
    for name in ("logistic-sam-weight_decay-full.npz", "detection_curves.png", "loo_scatter.png"):
        assert (tmp_path / name).read_text() == "precious\n"


def test_every_cli_command_has_rows():
    from refsam.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)  # the sub-command names
    assert commands - {row[0][0] for row in CLI_MATRIX} == set()
