"""Bad input at every public entry point raises ValueError naming the argument, what was expected and what
was got (issue 2, item 7). Each message is pinned with ``match``.

The table below is the specification; the hypothesis test corrupts one entry of a valid random problem
at a random place and checks the corruption is caught.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refsam
from refsam import MLP, SAM, SGD, LogisticRegression, Problem, SoftmaxRegression, replay, train
from refsam.kit.testing import problems
from refsam.models import model_from_spec

X, Y, _ = refsam.make_gaussian_classification(6, 2, seed=0)  # n = 6, p = 2, binary labels
LOGISTIC = LogisticRegression()


def logistic_problem(**kwargs):
    return Problem(LOGISTIC, X, Y, **kwargs)


def with_entry(array, index, value):
    out = np.array(array, dtype=float)
    out[index] = value
    return out


BAD_INPUTS = {
    # Problem: data
    "X not 2-D": (lambda: Problem(LOGISTIC, X[:, 0], Y), r"`X` must be 2-dimensional, got shape \(6,\)"),
    "X with NaN": (lambda: Problem(LOGISTIC, with_entry(X, (2, 1), np.nan), Y),
                   r"`X` must contain only finite values, got 1 NaN/inf entries"),
    "X with inf": (lambda: Problem(LOGISTIC, with_entry(X, (0, 0), -np.inf), Y),
                   r"`X` must contain only finite values"),
    "X not numbers": (lambda: Problem(LOGISTIC, [["a", "b"]], [0]), r"`X` must be an array of real numbers"),
    "X empty": (lambda: Problem(LOGISTIC, np.zeros((0, 2)), np.zeros(0)), r"`X` must have at least one row"),
    "y wrong length": (lambda: Problem(LOGISTIC, X, Y[:5]),
                       r"`y` must have shape \(6,\) to match `X`, got \(5,\)"),
    "y not integer": (lambda: Problem(LOGISTIC, X, Y + 0.5), r"`y` must hold integer class labels"),
    "y with NaN": (lambda: Problem(LOGISTIC, X, with_entry(Y, 0, np.nan)), r"`y` must contain only finite"),
    "label above range": (lambda: Problem(LOGISTIC, X, np.full(6, 2)),
                          r"`y` labels must lie in 0..1 for logistic, got values in 2..2"),
    "negative label": (lambda: Problem(SoftmaxRegression(3), X, with_entry(Y, 1, -1)),
                       r"`y` labels must lie in 0..2 for softmax, got values in -1\.\."),
    # Problem: the loss's λ (l2), weights, model
    "negative l2": (lambda: logistic_problem(l2=-0.1), r"`l2` must be a finite number >= 0, got -0.1"),
    "NaN l2": (lambda: logistic_problem(l2=np.nan), r"`l2` must be a finite number"),
    "l2 a string": (lambda: logistic_problem(l2="0.1"), r"`l2` must be a real number >= 0, got '0.1'"),
    "l2 wrong length": (lambda: logistic_problem(l2=np.ones(2)), r"`l2` must have shape \(3\), got \(2,\)"),
    "l2 negative entry": (lambda: logistic_problem(l2=with_entry(np.ones(3), 1, -0.5)),
                          r"`l2` entries must be >= 0, got minimum -0.5"),
    "weights wrong length": (lambda: logistic_problem(weights=np.ones(5)),
                             r"`weights` must have shape \(6\), got \(5,\)"),
    "negative weight": (lambda: logistic_problem(weights=with_entry(np.ones(6), 3, -0.5)),
                        r"`weights` must be >= 0, got minimum -0.5"),
    "NaN weight": (lambda: logistic_problem(weights=with_entry(np.ones(6), 3, np.nan)),
                   r"`weights` must contain only finite values"),
    "model not a Model": (lambda: Problem("logistic", X, Y), r"`model` must be a refsam model .*got str"),
    "MLP width mismatch": (lambda: Problem(MLP((3, 4, 2)), X, Y),
                           r"MLP input width sizes\[0\]=3 does not match the data's n_features=2"),
    # models
    "softmax one class": (lambda: SoftmaxRegression(1), r"`n_classes` must be an int >= 2, got 1"),
    "softmax float classes": (lambda: SoftmaxRegression(3.0), r"`n_classes` must be an int >= 2, got 3.0"),
    "MLP sizes too short": (lambda: MLP((3,)), r"`sizes` must list at least \(n_features, n_classes\)"),
    "MLP sizes not a sequence": (lambda: MLP(3), r"`sizes` must be a sequence of ints"),
    "MLP one class": (lambda: MLP((3, 4, 1)), r"`sizes\[-1\]` \(number of classes\) must be >= 2, got 1"),
    "MLP zero width": (lambda: MLP((3, 0, 2)), r"`sizes entries` must be an int >= 1, got 0"),
    "MLP unknown activation": (lambda: MLP((2, 3, 2), activation="relu"),
                               r"`activation` must be one of \['sigmoid', 'softplus', 'tanh'\], got 'relu'"),
    "MLP activation unhashable": (lambda: MLP((2, 3, 2), activation=["tanh"]),
                                  r"`activation` must be one of"),
    "unknown model spec": (lambda: model_from_spec({"name": "cnn"}), r"model spec `name` must be one of"),
    # SAM
    "negative rho": (lambda: SAM(-0.1), r"`rho` must be a finite number >= 0, got -0.1"),
    "infinite rho": (lambda: SAM(np.inf), r"`rho` must be a finite number >= 0, got inf"),
    "unknown rule": (lambda: SAM(0.1, rule="gsam"),
                     r"`rule` must be one of \['asam', 'fisher', 'friendly', 'sam', 'usam'\], got 'gsam'"),
    "negative kappa": (lambda: SAM(0.1, "asam", kappa=-0.5),
                       r"`kappa` must be a finite number >= 0, got -0.5"),
    "negative norm_eps": (lambda: SAM(0.1, norm_eps=-1e-12), r"`norm_eps` must be a finite number >= 0"),
    "t_mask not bool": (lambda: SAM(0.1, "asam", t_mask=[1, 0]), r"`t_mask` must be a 1-d bool array"),
    "t_mask off asam": (lambda: SAM(0.1, "sam", t_mask=np.array([True])),
                        r"`t_mask` applies to rule=.asam. only"),
    # the optimizer (the learning rate and the weight decay are refsam.SGD's since 0.2)
    "zero lr": (lambda: SGD(0.0), r"`lr` must be a finite number > 0, got 0.0"),
    "negative lr": (lambda: SGD(-1.0), r"`lr` must be a finite number > 0"),
    "NaN lr": (lambda: SGD(np.nan), r"`lr` must be a finite number > 0"),
    "lr schedule with 0": (lambda: SGD([0.1, 0.0]),
                           r"`lr` must be a float > 0 or a non-empty array of floats > 0, got minimum 0.0"),
    "negative weight_decay": (lambda: SGD(0.1, weight_decay=-0.1),
                              r"`weight_decay` must be a finite number >= 0, got -0.1"),
    "NaN weight_decay": (lambda: SGD(0.1, weight_decay=np.nan), r"`weight_decay` must be a finite number"),
    "weight_decay a string": (lambda: SGD(0.1, weight_decay="0.1"),
                              r"`weight_decay` must be a real number >= 0, got '0.1'"),
    # train
    "problem not a Problem": (lambda: train("p", SAM(0.1), SGD(0.1), 2),
                              r"`problem` must be a refsam.Problem"),
    "sam not a SAM": (lambda: train(logistic_problem(), 0.1, SGD(0.1), 2),
                      r"`sam` must be a refsam.SAM, got float"),
    "optimizer a bare lr": (lambda: train(logistic_problem(), SAM(0.1), 0.1, 2),
                            r"`optimizer` must be a refsam optimizer such as refsam.SGD\(lr, \.\.\.\), "
                            r"got float"),
    "lr schedule wrong length": (lambda: train(logistic_problem(), SAM(0.1), SGD([0.1]), 2),
                                 r"the optimizer's `lr` schedule has 1 rates; the run has 2 steps"),
    "zero steps": (lambda: train(logistic_problem(), SAM(0.1), SGD(0.1), 0),
                   r"`steps` must be an int >= 1, got 0"),
    "float steps": (lambda: train(logistic_problem(), SAM(0.1), SGD(0.1), 2.0),
                    r"`steps` must be an int >= 1, got 2.0"),
    "batch_size zero": (lambda: train(logistic_problem(), SAM(0.1), SGD(0.1), 2, batch_size=0),
                        r"`batch_size` must be an int >= 1, got 0"),
    "batch_size > n": (lambda: train(logistic_problem(), SAM(0.1), SGD(0.1), 2, batch_size=7),
                       r"`batch_size` must be <= n=6 \(or None for the full batch\), got 7"),
    "negative seed": (lambda: train(logistic_problem(), SAM(0.1), SGD(0.1), 2, seed=-1),
                      r"`seed` must be None, an int >= 0 or a np.random.Generator, got -1"),
    "seed a string": (lambda: train(logistic_problem(), SAM(0.1), SGD(0.1), 2, seed="0"),
                      r"`seed` must be None, an int >= 0 or a np.random.Generator, got str"),
    "seed a bool": (lambda: train(logistic_problem(), SAM(0.1), SGD(0.1), 2, seed=True),
                    r"`seed` must be None"),
    "theta0 wrong shape": (lambda: train(logistic_problem(), SAM(0.1), SGD(0.1), 2, theta0=np.zeros(2)),
                           r"`theta0` must have shape \(3\), got \(2,\)"),
    "theta0 with inf": (lambda: train(logistic_problem(), SAM(0.1), SGD(0.1), 2, theta0=[0.0, np.inf, 0.0]),
                        r"`theta0` must contain only finite values"),
    # replay
    "trajectory not a Trajectory": (lambda: replay(logistic_problem(), "run.npz"),
                                    r"`trajectory` must be a refsam.Trajectory, got str"),
    "replay weights wrong length": (
        lambda: replay(logistic_problem(), train(logistic_problem(), SAM(0.1), SGD(0.1), 1),
                       weights=np.ones(3)),
        r"`weights` must have shape \(6\), got \(3,\)"),
    "replay negative weights": (
        lambda: replay(logistic_problem(), train(logistic_problem(), SAM(0.1), SGD(0.1), 1),
                       weights=-np.ones(6)),
        r"`weights` must be >= 0"),
    # validation helpers used by later layers (test data, parameters)
    "test labels out of range": (lambda: LOGISTIC.check_data(X, np.full(6, 3), "X_test", "y_test"),
                                 r"`y_test` labels must lie in 0..1 for logistic, got values in 3..3"),
    "test features wrong width": (lambda: logistic_problem().check_theta(np.zeros(4)),
                                  r"`theta` must have shape \(3\), got \(4,\)"),
    "init seed negative": (lambda: LOGISTIC.init_params(2, seed=-3), r"`seed` must be None, an int >= 0"),
    # datasets
    "dataset n zero": (lambda: refsam.make_gaussian_classification(0), r"`n` must be an int >= 1, got 0"),
    "dataset one class": (lambda: refsam.make_gaussian_classification(10, n_classes=1),
                          r"`n_classes` must be an int >= 2, got 1"),
    "dataset flip fraction": (lambda: refsam.make_gaussian_classification(10, flip_fraction=1.5),
                              r"`flip_fraction` must lie in \[0, 1\], got 1.5"),
    "dataset negative separation": (lambda: refsam.make_gaussian_classification(10, separation=-1.0),
                                    r"`separation` must be a finite number >= 0, got -1.0"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_rejected_with_a_clear_message(case):
    call, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_messages_are_one_line_and_name_an_argument():
    """Every message above starts by naming what is wrong and fits on one line (the CLI prints it)."""
    for call, _ in BAD_INPUTS.values():
        with pytest.raises(ValueError) as info:
            call()
        text = str(info.value)
        assert "\n" not in text and ("`" in text or "MLP input width" in text), text


@settings(max_examples=15)
@given(problems(weighted=True), st.data())
def test_one_corrupted_entry_is_always_caught(problem, data):
    """Take a valid random problem, corrupt one entry of X, y or w at a drawn place: rejected, naming it."""
    n, p = problem.X.shape
    kind = data.draw(st.sampled_from(["X non-finite", "y out of range", "y non-integer", "w negative",
                                      "w non-finite", "w wrong length"]))
    i, j = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, p - 1))
    X, y, w = problem.X.copy(), problem.y.astype(float), problem.weights.copy()
    if kind == "X non-finite":
        X[i, j] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        message = r"`X` must contain only finite values, got 1 NaN/inf entries"
    elif kind == "y out of range":
        y[i] = data.draw(st.sampled_from([-1, problem.model.n_classes, 10**6]))
        message = r"`y` labels must lie in 0..\d+"
    elif kind == "y non-integer":
        y[i] += 0.25
        message = r"`y` must hold integer class labels"
    elif kind == "w negative":
        w[i] = -data.draw(st.floats(1e-12, 1e3))
        message = r"`weights` must be >= 0, got minimum -"
    elif kind == "w non-finite":
        w[i] = np.nan
        message = r"`weights` must contain only finite values"
    else:
        w = np.append(w, 1.0)
        message = rf"`weights` must have shape \({n}\), got \({n + 1},\)"
    with pytest.raises(ValueError, match=message):
        Problem(problem.model, X, y, w, l2=problem.l2)


def test_valid_inputs_of_every_accepted_type_pass():
    """The boundary accepts what it promises: lists, ints, numpy scalars, a Generator seed, None."""
    problem = Problem(LOGISTIC, X.tolist(), Y.tolist(), weights=[1] * 6)
    optimizer = SGD([0.1, 0.2], weight_decay=np.float64(0.01))
    trajectory = train(problem, SAM(np.float32(0.1), "usam"), optimizer, np.int64(2), batch_size=np.int64(3),
                       seed=np.random.default_rng(0), theta0=[0, 0, 0])
    assert trajectory.thetas.shape == (3, 3) and trajectory.config["seed"] is None
    assert SAM(0, "sam").rho == 0.0 and train(problem, SAM(0.1), SGD(1), 1, seed=None).steps == 1
    assert Problem(LOGISTIC, X, Y, l2=np.float64(0.01)).l2 == 0.01
    assert SGD(np.int64(1), weight_decay=0).lr == 1.0


@pytest.mark.parametrize("keyword", ["weight_decay", "regularization", "decay_biases"])
def test_the_0_1_problem_keywords_are_gone(keyword):
    """0.1's Problem(weight_decay=, regularization=, decay_biases=) is gone: the weight decay is the
    optimizer's (SGD(weight_decay=)) or the loss's (Problem(l2=)); an old call fails loudly."""
    value = {"weight_decay": 0.1, "regularization": "coupled", "decay_biases": False}[keyword]
    with pytest.raises(TypeError, match=keyword):
        Problem(LOGISTIC, X, Y, **{keyword: value})
    assert not hasattr(logistic_problem(), keyword)
