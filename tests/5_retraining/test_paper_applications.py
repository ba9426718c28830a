"""The paper's applications end to end — removal curves, detection protocols, model editing — each
prediction checked here against retraining written out independently (train from the recorded θ_0 on
the recorded batches with changed weights or labels)."""

import autograd
import numpy as np
import pytest

import refsam
from refsam import apps
from refsam.errors import InvalidInputError

WEIGHT_DECAY = 0.05  # λ of the base optimizer, refsam.SGD(0.5, weight_decay=λ)


@pytest.fixture(scope="module")
def setting():
    """A converged full-batch softmax run on 90 points, 15% flipped labels, separate validation and test
    sets from the same distribution."""
    X, y, _ = refsam.make_gaussian_classification(n=90 + 120, n_features=4, n_classes=3, separation=1.5,
                                                  seed=5)
    y_noisy, flipped = refsam.data.flip_labels(y[:90], 3, 0.15, seed=2)
    problem = refsam.Problem(refsam.SoftmaxRegression(3), X[:90], y_noisy)
    fit_ = apps.fit(problem, refsam.SAM(0.05), refsam.SGD(0.5, weight_decay=WEIGHT_DECAY), steps=300,
                    seed=0)
    assert fit_.fixed_point is not None and fit_.fixed_point.converged
    return fit_, flipped, y[:90], (X[90:150], y[90:150]), (X[150:], y[150:])


def _retrain(fit_, weights=None, labels=None):
    """θ_T of the recorded procedure with other weights or labels: written here, not refsam's helpers."""
    p, t = fit_.problem, fit_.trajectory
    problem = refsam.Problem(p.model, p.X, p.y if labels is None else labels,
                             p.weights if weights is None else weights, l2=p.l2)
    optimizer = refsam.SGD(t.lrs, weight_decay=WEIGHT_DECAY)  # the fixture's optimizer, the recorded rates
    return refsam.train(problem, fit_.sam, optimizer, theta0=t.theta0, batches=t.batches).theta_final


def _acc(problem, theta, X, y):
    return np.mean(np.argmax(problem.model.predict_proba(theta, X), axis=1) == y)


def test_removal_curves_are_retraining(setting):
    fit_, flipped, _, (Xv, yv), (Xt, yt) = setting
    ks = [0, 3, 9, 18]
    trak = refsam.trak_influence(fit_.problem, fit_.theta_hat, Xv, yv, 6,
                                 optimizer=fit_.optimizer).mean(axis=1)
    curves = apps.removal_curves(fit_, Xv, yv, Xt, yt, ks, ["closed_form", "closed_form_erm", "tracin"],
                                 extra_scores={"trak": trak}, n_random=2, flipped=flipped)
    names = [c.method for c in curves]
    assert names == ["closed_form", "closed_form_erm", "tracin", "trak", "loss", "random"]
    closed = curves[0]
    scores = apps.influence(fit_, "closed_form", Xv, yv).mean(axis=1)
    order = np.argsort(-scores, kind="stable")
    f0 = np.mean(fit_.problem.model.losses(fit_.theta_final, Xv, yv))
    for i, k in enumerate(ks):
        w = np.ones(90)
        w[order[:k]] = 0.0
        theta = _retrain(fit_, weights=w)
        assert closed.test_accuracy[i] == _acc(fit_.problem, theta, Xt, yt)
        f = np.mean(fit_.problem.model.losses(theta, Xv, yv))
        assert closed.val_loss_change[i] == pytest.approx(f - f0, abs=1e-14)
        assert closed.predicted_val_change[i] == pytest.approx(-scores[order[:k]].sum(), abs=1e-14)
        assert closed.flipped_removed[i] == flipped[order[:k]].sum()
    assert closed.val_loss_change[0] == 0.0  # k = 0 is the recorded run itself
    # the harmful points really are harmful: removing them lowers the validation loss, random does not
    assert closed.val_loss_change[-1] < 0 < curves[-1].val_loss_change[-1] + 0.05
    # the first-order prediction holds for small k (the linear regime) and keeps its sign at large k
    gap = abs(closed.predicted_val_change[1] - closed.val_loss_change[1])
    assert gap <= 0.3 * abs(closed.val_loss_change[1])
    assert np.all(np.sign(closed.predicted_val_change[1:]) == np.sign(closed.val_loss_change[1:]))
    assert np.all(np.isnan(curves[-1].predicted_val_change))  # no prediction for the baselines


def test_removal_curves_bad_input(setting):
    fit_, _, _, (Xv, yv), (Xt, yt) = setting
    with pytest.raises(InvalidInputError, match="`ks` must be removal counts in 0..89"):
        apps.removal_curves(fit_, Xv, yv, Xt, yt, [5, 90])
    with pytest.raises(InvalidInputError, match="extra_scores"):
        apps.removal_curves(fit_, Xv, yv, Xt, yt, [5], extra_scores={"x": np.ones(3)})
    with pytest.raises(InvalidInputError, match="`flipped` must have shape"):
        apps.removal_curves(fit_, Xv, yv, Xt, yt, [5], flipped=np.ones(3, bool))


def test_detection_protocols_relabel_and_retrain(setting):
    fit_, flipped, true, (Xv, yv), (Xt, yt) = setting
    results, accs = apps.detection_protocols(fit_, flipped, true, Xv, yv, Xt, yt, ["closed_form"],
                                             fractions=(0.1, 0.3, 1.0))
    rankings = [r.ranking for r in results]
    assert rankings == ["closed_form (self)", "closed_form (validation)", "loss", "random"]
    assert accs["clean"] == _acc(fit_.problem, _retrain(fit_, labels=true), Xt, yt)
    assert accs["noisy"] == _acc(fit_.problem, fit_.theta_final, Xt, yt)
    for r in results:
        assert r.fixed[-1] == 1.0 and r.test_accuracy[-1] == accs["clean"]  # everything inspected: clean
        assert np.all(np.diff(r.fixed) >= 0)
    self_rank = results[0]
    order = np.argsort(-apps.detection_scores(fit_, "closed_form"), kind="stable")[:9]  # 10% of 90
    labels = fit_.problem.y.copy()
    labels[order[flipped[order]]] = true[order[flipped[order]]]
    assert self_rank.test_accuracy[0] == _acc(fit_.problem, _retrain(fit_, labels=labels), Xt, yt)
    assert self_rank.fixed[0] == flipped[order].sum() / flipped.sum()
    assert self_rank.auroc == apps.auroc(apps.detection_scores(fit_, "closed_form"), flipped)
    assert results[0].auroc > results[-1].auroc  # influence beats chance


def test_detection_protocols_bad_input(setting):
    fit_, flipped, true, (Xv, yv), (Xt, yt) = setting
    with pytest.raises(InvalidInputError, match="differ from the training labels exactly where"):
        apps.detection_protocols(fit_, flipped, fit_.problem.y, Xv, yv, Xt, yt)
    with pytest.raises(InvalidInputError, match="marks no label"):
        apps.detection_protocols(fit_, np.zeros(90, bool), fit_.problem.y, Xv, yv, Xt, yt)
    with pytest.raises(InvalidInputError, match="fractions"):
        apps.detection_protocols(fit_, flipped, true, Xv, yv, Xt, yt, fractions=(0.0,))


@pytest.mark.parametrize("method", ["closed_form", "trajectory"])
def test_model_editing_is_checked_by_retraining(setting, method):
    fit_, _, _, _, (Xt, yt) = setting
    problem = fit_.problem
    before = np.argmax(problem.model.predict_proba(fit_.theta_final, Xt), axis=1)
    wrong = np.nonzero(before != yt)[0]
    assert wrong.size >= 2
    results = [apps.edit_prediction(fit_, Xt, yt, int(i), method=method, max_remove=30) for i in wrong[:4]]
    for i, e in zip(wrong[:4], results):
        assert e.target == yt[i] and e.rival == before[i] and e.margin_before < 0
        w = np.ones(problem.n)
        w[e.removed] = 0.0
        theta = _retrain(fit_, weights=w)
        after = np.argmax(problem.model.predict_proba(theta, Xt), axis=1)
        z = problem.model.logits(theta, Xt[i:i + 1])[0]
        assert e.actual_margin == pytest.approx(z[e.target] - z[e.rival], abs=1e-12)
        assert e.predicted_label == after[i]
        others = np.arange(len(yt)) != i
        assert e.collateral_changed == pytest.approx(np.mean(after[others] != before[others]))
        assert e.accuracy_after == pytest.approx(np.mean(after == yt))
        # the set is the smallest predicted to flip the margin: the most negative I_j(m) first
        grad = autograd.grad(lambda t, i=i, e=e: problem.model.logits(t, Xt[i:i + 1])[0][e.target]
                             - problem.model.logits(t, Xt[i:i + 1])[0][e.rival])(fit_.theta_final)
        d_theta = (refsam.parameter_influence(problem, fit_.sam, fit_.theta_hat, optimizer=fit_.optimizer)
                   if method == "closed_form"
                   else refsam.trajectory_parameter_influence(problem, fit_.trajectory))
        I_m = d_theta @ grad
        order = np.argsort(I_m, kind="stable")
        assert set(e.removed) == set(order[:len(e.removed)])
        assert e.predicted_margin == pytest.approx(e.margin_before - I_m[e.removed].sum(), abs=1e-12)
        if e.predicted_margin > 0 and len(e.removed) > 1:  # one point fewer is not predicted to flip it
            assert e.margin_before - I_m[order[:len(e.removed) - 1]].sum() <= 0
    assert any(e.succeeded for e in results)  # some edit works when checked by retraining


def test_model_editing_bad_input(setting):
    fit_, _, _, _, (Xt, yt) = setting
    with pytest.raises(InvalidInputError, match="`index` must lie in"):
        apps.edit_prediction(fit_, Xt, yt, 999)
    current = int(np.argmax(fit_.problem.model.predict_proba(fit_.theta_final, Xt[:1])[0]))
    with pytest.raises(InvalidInputError, match="other than the current prediction"):
        apps.edit_prediction(fit_, Xt, yt, 0, target=current)
    with pytest.raises(InvalidInputError, match="exact one"):
        apps.edit_prediction(fit_, Xt, yt, 0, method="tracin")


def test_cli_runs_each_application(capsys):
    from refsam.cli import main

    assert main(["edit", "--quiet", "--no-figures"]) == 0  # the first misclassified validation point
    out = capsys.readouterr().out
    assert "predicted to give m =" in out and "retrained without them: m =" in out and "collateral" in out
    assert main(["remove", "--ks", "0,4,8", "--quiet", "--no-figures", "--n", "120", "--methods",
                 "closed_form,tracin"]) == 0
    out = capsys.readouterr().out
    assert "Removal curves" in out and "k=8" in out and "random" in out and "predicted Δf" in out
    assert main(["detect", "--protocols", "--quiet", "--no-figures", "--n", "120", "--methods",
                 "closed_form"]) == 0
    out = capsys.readouterr().out
    assert "closed_form (validation)" in out and "recovered@10%" in out and "highest AUROC" in out
