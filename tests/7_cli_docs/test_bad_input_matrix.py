# ruff: noqa: E501  (a table reads best one row per line)
"""The bad-input matrix: every public entry point and every CLI command, given inputs it cannot use,
raises the documented exception type with a message naming the argument (``match=`` on its key words);
each CLI failure is one line on stderr, exit status 2, and happens before any work (nothing on stdout).

A coverage test requires a row for every public callable of ``refsam`` — a new entry point without a
row fails here.
"""

import numpy as np
import pytest

import refsam
from refsam import apps, data, kit, training
from refsam.cli import main
from refsam.errors import InvalidInputError
from refsam.kit.files import CaseFileError

X, Y, _ = refsam.make_gaussian_classification(n=20, n_features=3, seed=0)
P = refsam.Problem(refsam.LogisticRegression(), X, Y, 0.05)
S = refsam.SAM(0.05)
T = refsam.train(P, S, 0.5, 10, seed=0)
ROOT = refsam.solve_fixed_point(P, S, np.zeros(P.d))
XT, YT = X[:3], Y[:3]
NAN = np.nan
LOG = refsam.LogisticRegression
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
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, -1), InvalidInputError, r"`weight_decay` must be .*>= 0"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, np.ones(2)), InvalidInputError,
     r"`weight_decay` must have shape \(4\)"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, weights=-np.ones(20)), InvalidInputError,
     r"`weights` must be >= 0"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, weights=np.ones(3)), InvalidInputError,
     r"`weights` must have shape \(20\)"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, weights=np.full(20, NAN)), InvalidInputError,
     r"`weights` must contain only finite"),
    ("Problem", lambda: refsam.Problem(LOG(), X, Y, regularization="x"), InvalidInputError,
     r"`regularization` must be one of"),
    # training
    ("train", lambda: refsam.train(P, S, -1, 10), InvalidInputError, r"`lr` must be a finite number > 0"),
    ("train", lambda: refsam.train(P, S, NAN, 10), InvalidInputError, r"`lr` must be a finite number > 0"),
    ("train", lambda: refsam.train(P, S, 0.5, 0), InvalidInputError, r"`steps` must be an int >= 1, got 0"),
    ("train", lambda: refsam.train(P, S, 0.5, 2.5), InvalidInputError, r"`steps` must be an int >= 1, got 2.5"),
    ("train", lambda: refsam.train(P, S, np.ones(3), 10), InvalidInputError, r"`lr` must have shape \(10\)"),
    ("train", lambda: refsam.train(P, S, 0.5, 10, batch_size=0), InvalidInputError, r"`batch_size` .* >= 1"),
    ("train", lambda: refsam.train(P, S, 0.5, 10, batch_size=100), InvalidInputError,
     r"`batch_size` must be <= n=20"),
    ("train", lambda: refsam.train(P, S, 0.5, 10, theta0=np.ones(2)), InvalidInputError,
     r"`theta0` must have shape \(4\)"),
    ("train", lambda: refsam.train(P, S, 0.5, 10, theta0=np.full(P.d, NAN)), InvalidInputError,
     r"`theta0` must contain only finite"),
    ("train", lambda: refsam.train("p", S, 0.5, 10), InvalidInputError, r"`problem` must be a refsam.Problem"),
    ("train", lambda: refsam.train(P, 0.05, 0.5, 10), InvalidInputError, r"`sam` must be a refsam.SAM"),
    ("train", lambda: refsam.train(P, S, 0.5, 10, seed=-1), InvalidInputError, r"`seed` must be None"),
    ("train", lambda: refsam.train(P, S, 0.5, 10, momentum=1.0), InvalidInputError,
     r"`momentum` must lie in \[0, 1\)"),
    ("train", lambda: refsam.train(P, S, 0.5, 10, nesterov=True), InvalidInputError,
     r"`nesterov=True` needs `momentum` > 0"),
    ("train", lambda: refsam.train(P, S, 0.5, batches=[[0, 99]]), InvalidInputError,
     r"`batches\[0\]` must lie in 0..19"),
    ("train", lambda: refsam.train(P, S, 0.5, batches=[[]]), InvalidInputError, r"`batches\[0\]` must be a non-empty"),
    ("train", lambda: refsam.train(P, S, 0.5, 3, batches=[[0, 1]]), InvalidInputError,
     r"`steps` \(3\) must equal len\(batches\) \(1\)"),
    ("train", lambda: refsam.train(refsam.Problem(LOG(), np.zeros((2, 1)), [0, 1]), S, 0.5, 2,
                                   theta0=np.zeros(2)), refsam.ZeroGradientError, r"gradient is exactly zero"),
    ("train", lambda: refsam.train(refsam.Problem(LOG(), 1e3 * np.eye(3), [0, 1, 0]), refsam.SAM(0.0), 1e306, 50),
     refsam.DivergenceError, r"training diverged at step \d+: .* lower `lr`"),
    ("replay", lambda: refsam.replay(P, T, weights=np.ones(3)), InvalidInputError, r"`weights` must have shape"),
    ("replay", lambda: refsam.replay(refsam.Problem(LOG(), X + 1, Y, 0.05), T), InvalidInputError,
     r"`problem` does not match the trajectory: training data"),
    ("preset", lambda: training.preset("nope", P, 0.1), InvalidInputError, r"`name` must be one of .*'nope'"),
    ("preset", lambda: training.preset("jax-sam", "P", 0.1), InvalidInputError, r"`problem` must be a refsam"),
    ("SGDMomentum", lambda: training.SGDMomentum(0.9, dampening=2), InvalidInputError,
     r"`dampening` must lie in \[0, 1\]"),
    ("Trajectory", lambda: refsam.Trajectory(np.ones((3, 2)), np.ones((1, 2)), [[0]], [1.0], [1.0], {}),
     InvalidInputError, r"Trajectory\(...\): `config` lacks keys"),
    ("Trajectory", lambda: refsam.Trajectory.load("/nonexistent/t.npz"), InvalidInputError,
     r"cannot read a trajectory from '/nonexistent/t.npz'"),
    ("Trajectory", lambda: T.save("/"), InvalidInputError, r"cannot write '/': it is a directory"),
    # trajectory influence and its ground truth
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, XT, YT, method="tracin", last_steps=2),
     InvalidInputError, r"`last_steps` truncates the adjoint recursion: it needs method='adjoint'"),
    ("trajectory_influence", lambda: refsam.trajectory_influence(P, T, XT, YT, "tracin", checkpoints=99),
     InvalidInputError, r"`checkpoints` must be at most the run's 10 steps, got 99"),
    ("trajectory_hyperparameter_sensitivity", lambda: refsam.trajectory_hyperparameter_sensitivity(P, "run"),
     InvalidInputError, r"`trajectory` must be a refsam.Trajectory"),
    ("trajectory_hyperparameter_sensitivity", lambda: refsam.trajectory_hyperparameter_sensitivity(
        refsam.Problem(LOG(), X, Y, 0.1), T), InvalidInputError, r"does not match the trajectory"),
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
    ("solve_fixed_point", lambda: refsam.solve_fixed_point(P, S, np.zeros(P.d), lr=-1), InvalidInputError,
     r"`lr` must be a finite number > 0"),
    ("fixed_point_diagnostics", lambda: refsam.fixed_point_diagnostics(P, S, ROOT.theta, lr=-1),
     InvalidInputError, r"`lr` must be a finite number > 0"),
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
    ("apps.fit", lambda: apps.fit(P, S, -1, 10), InvalidInputError, r"`lr` must be a finite number > 0"),
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
    result_types = {"FixedPoint", "HyperparameterSensitivity", "Model", "SolveInfo"}  # returned, not called with input
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
    (["train", "--regularization", "x"], r"argument --regularization: invalid choice"),
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
    (["detect", "--flip", "0"], r"no flipped labels to detect: use --flip > 0"),
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
    (["tune", "--hypergradient", "closed_form", "--momentum", "0.9"], r"--hypergradient closed_form is for "
                                                                      r"runs without momentum"),
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
]


@pytest.mark.parametrize("argv, message", CLI_MATRIX, ids=[" ".join(row[0]) for row in CLI_MATRIX])
def test_cli_bad_input(argv, message, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("precious\n")
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


def test_every_cli_command_has_rows():
    from refsam.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)  # the sub-command names
    assert commands - {row[0][0] for row in CLI_MATRIX} == set()
