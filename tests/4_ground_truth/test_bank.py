"""Counterfactual banks and the LDS: a bank's outputs equal independent re-solves and replays, its shards
merge to the serial bank bit for bit, the LDS is scipy's Spearman, the exact influence's LDS tends to 1
as the removed group shrinks, an all-removed replayed batch steps on its weight decay alone, and the
peers' files round-trip."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.stats

import refsam
from refsam.errors import InvalidInputError
from refsam.ground_truth.bank import BANK_BLOCK, CounterfactualBank, draw_masks, with_context
from refsam.tolerances import RTOL_REFIT, RTOL_REORDERED, rel_err
from refsam.training import sam_gradient

X, Y, _ = refsam.make_gaussian_classification(n=80, n_features=4, n_classes=2, seed=3)
X_TRAIN, Y_TRAIN, X_TEST, Y_TEST = X[:60], Y[:60], X[60:], Y[60:]
LAM, RHO, LR = 1e-2, 0.05, 0.5
OPT = refsam.SGD(LR, weight_decay=LAM)  # 0.1's Problem(weight_decay=λ): the optimizer's weight decay


@pytest.fixture(scope="module")
def root():
    problem = refsam.Problem(refsam.LogisticRegression(), X_TRAIN, Y_TRAIN)
    sam = refsam.SAM(RHO)
    run = refsam.train(problem, sam, OPT, 300, seed=0)
    return problem, sam, refsam.solve_fixed_point(problem, sam, run.theta_final, optimizer=OPT)


@pytest.fixture(scope="module")
def minibatch_run():
    problem = refsam.Problem(refsam.LogisticRegression(), X_TRAIN, Y_TRAIN)
    sam = refsam.SAM(RHO)
    return problem, sam, refsam.train(problem, sam, OPT, 40, batch_size=10, seed=1)


def _bank(masks, outputs):
    K, n = masks.shape
    meta = {"output": "loss", "subset_size": int(masks[0].sum()), "shard": None, "kind": "weights",
            "subset_ratio": 0.5, "fingerprint": {"target": "test", "n": n, "m": outputs.shape[1]}}
    return CounterfactualBank(masks, outputs, np.zeros(outputs.shape[1]), meta)


# -- LDS -------------------------------------------------------------------------------------------------
def test_lds_is_scipy_spearman_of_the_summed_scores_against_the_outputs():
    rng = np.random.default_rng(0)
    masks = draw_masks(30, 15, 40, seed=1)
    outputs = rng.standard_normal((40, 5))
    outputs[:10, 2] = 1.0  # ties in the outputs
    scores = rng.standard_normal((30, 5))
    scores[:, 4] = np.round(scores[:, 4])  # ties in the predictions
    result = refsam.lds(scores, _bank(masks, outputs))
    expected = [scipy.stats.spearmanr(masks.astype(float) @ scores[:, q], outputs[:, q])[0] for q in range(5)]
    np.testing.assert_allclose(result.per_query, expected, rtol=1e-12, atol=1e-15)
    assert result.mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert np.ptp(result.per_query) > 0.05  # not a constant


def test_lds_of_a_constant_query_is_undefined_and_left_out_of_the_mean():
    masks = draw_masks(10, 5, 6, seed=0)
    outputs = np.column_stack([np.arange(6.0), np.ones(6)])
    scores = np.column_stack([np.arange(10.0), np.arange(10.0)])
    result = refsam.lds(scores, _bank(masks, outputs))
    assert np.isnan(result.per_query[1]) and result.undefined == 1
    assert result.mean == result.per_query[0]


def test_lds_refuses_scores_of_the_wrong_shape_naming_the_fix():
    bank = _bank(draw_masks(10, 5, 6, seed=0), np.zeros((6, 3)))
    with pytest.raises(InvalidInputError, match=r"`scores` must have shape .* = \(10, 3\) .*got \(3, 10\); "
                                                r"transpose it"):
        refsam.lds(np.zeros((3, 10)), bank)


# -- banks equal independent counterfactuals -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["weights", "retrain"])
def test_a_root_bank_equals_independent_resolves(root, kind):
    problem, sam, fp = root
    bank = refsam.counterfactual_bank(problem, sam, fp, X_TEST, Y_TEST, subset_ratio=0.5, n_subsets=4,
                                      kind=kind, seed=5)
    assert bank.masks.shape == (4, 60) and bank.outputs.shape == (4, 20) and bank.base.shape == (20,)
    assert np.all(bank.masks.sum(axis=1) == 30)
    for mask, row in zip(bank.masks, bank.outputs):
        if kind == "weights":  # w = 1_S in the same objective (mean over n)
            theta = refsam.solve_fixed_point(problem, sam, fp.theta, optimizer=OPT,
                                             weights=mask.astype(float), tol=1e-13).theta
        else:  # the problem on S alone (mean over |S|): an independent formulation
            alone = refsam.Problem(refsam.LogisticRegression(), X_TRAIN[mask], Y_TRAIN[mask])
            theta = refsam.solve_fixed_point(alone, sam, fp.theta, optimizer=OPT, tol=1e-13).theta
        assert rel_err(row, problem.model.losses(theta, X_TEST, Y_TEST)) <= RTOL_REFIT
    assert np.ptp(bank.outputs, axis=0).max() > 1e-3  # the subsets differ
    assert rel_err(bank.base, problem.model.losses(fp.theta, X_TEST, Y_TEST)) <= RTOL_REFIT


def test_a_run_bank_equals_independent_replays_and_retrainings(minibatch_run):
    problem, sam, run = minibatch_run
    bank = refsam.counterfactual_bank(problem, sam, run, X_TEST, Y_TEST, subset_ratio=0.9, n_subsets=3)
    for mask, row in zip(bank.masks, bank.outputs):
        theta = refsam.replay(problem, run, weights=mask.astype(float)).theta_final
        assert rel_err(row, problem.model.losses(theta, X_TEST, Y_TEST)) <= RTOL_REORDERED
    retrain = refsam.counterfactual_bank(problem, sam, run, X_TEST, Y_TEST, subset_ratio=0.9, n_subsets=2,
                                         kind="retrain", seeds=[0, 7])
    for mask, row in zip(retrain.masks, retrain.outputs):
        alone = refsam.Problem(refsam.LogisticRegression(), X_TRAIN[mask], Y_TRAIN[mask])
        losses = [problem.model.losses(refsam.train(alone, sam, OPT, 40, batch_size=10, seed=s).theta_final,
                                       X_TEST, Y_TEST) for s in (0, 7)]
        assert rel_err(row, np.mean(losses, axis=0)) <= RTOL_REORDERED


def test_margins_are_the_correct_class_margins(root):
    problem, sam, fp = root
    bank = refsam.counterfactual_bank(problem, sam, fp, X_TEST, Y_TEST, n_subsets=2, output="margin")
    z = X_TEST @ fp.theta[:-1] + fp.theta[-1]
    assert rel_err(bank.base, np.where(Y_TEST == 1, z, -z)) <= RTOL_REFIT
    model = refsam.MLP([4, 3, 3])
    theta = model.init_params(4, 0)
    Z = np.asarray(model.logits(theta, X_TEST))
    y3 = Y_TEST + (X_TEST[:, 0] > 1)
    margin = refsam.ground_truth.bank.model_outputs(model, theta, X_TEST, y3, "margin")
    for q in range(len(y3)):
        others = np.delete(Z[q], y3[q])
        assert margin[q] == pytest.approx(Z[q, y3[q]] - np.log(np.sum(np.exp(others))), rel=1e-12)
    with pytest.raises(InvalidInputError, match=r"`output` must be one of \['loss', 'margin'\]"):
        refsam.counterfactual_bank(problem, sam, fp, X_TEST, Y_TEST, output="accuracy")


def test_the_exact_influence_lds_tends_to_one_as_the_removed_group_shrinks(root):
    problem, sam, fp = root
    influence = refsam.hessian_influence(problem, sam, fp, X_TEST, Y_TEST)
    values = []
    for ratio in (0.5, 0.9, 0.99):
        bank = refsam.counterfactual_bank(problem, sam, fp, X_TEST, Y_TEST, subset_ratio=ratio, n_subsets=40)
        values.append(refsam.lds(influence, bank).mean)
    assert values[0] < values[1] < values[2] and values[2] >= 0.99, values
    # at n = 60, ratio 0.99 removes one point: the bank is leave-one-out, and the identity behind the
    # LDS, f(S) ≈ f(1) − Σ_{i∉S} I_i, is the closed form's leave-one-out prediction
    removed = np.argmin(bank.masks, axis=1)
    loo = refsam.leave_one_out(problem, sam, fp, X_TEST, Y_TEST, indices=removed)
    assert rel_err(bank.outputs - bank.base, loo) <= RTOL_REFIT
    predicted = bank.masks @ influence - influence.sum(axis=0)
    assert np.corrcoef(predicted.ravel(), loo.ravel())[0, 1] >= 0.95


# -- shards, executors, files ----------------------------------------------------------------------------
def test_shards_and_executors_give_the_serial_bank_bit_for_bit(minibatch_run, tmp_path):
    problem, sam, run = minibatch_run
    K = 2 * BANK_BLOCK + 5  # three blocks, the last one short
    serial = refsam.counterfactual_bank(problem, sam, run, X_TEST, Y_TEST, n_subsets=K, seed=2)
    for i in range(3):
        refsam.counterfactual_bank(problem, sam, run, X_TEST, Y_TEST, n_subsets=K, seed=2, shard=(i, 3),
                                   directory=tmp_path)
    merged = refsam.merge_bank_shards(tmp_path, directory=tmp_path)
    assert np.array_equal(merged.masks, serial.masks) and np.array_equal(merged.outputs, serial.outputs)
    assert np.array_equal(merged.base, serial.base) and merged.meta == serial.meta
    loaded = refsam.load_bank(tmp_path)
    assert np.array_equal(loaded.outputs, serial.outputs) and loaded.fingerprint == serial.fingerprint
    with ThreadPoolExecutor(2) as pool:
        threaded = refsam.counterfactual_bank(problem, sam, run, X_TEST, Y_TEST, n_subsets=K, seed=2,
                                              executor=pool)
    assert np.array_equal(threaded.outputs, serial.outputs)
    pooled = refsam.counterfactual_bank(problem, sam, run, X_TEST, Y_TEST, n_subsets=K, seed=2, n_jobs=2)
    assert np.array_equal(pooled.outputs, serial.outputs)


def test_merge_refuses_missing_overlapping_and_foreign_shards(minibatch_run, root, tmp_path):
    problem, sam, run = minibatch_run
    K = 2 * BANK_BLOCK + 1
    shards = [refsam.counterfactual_bank(problem, sam, run, X_TEST, Y_TEST, n_subsets=K, shard=(i, 3))
              for i in range(3)]
    with pytest.raises(InvalidInputError, match=r"missing shards: \[1\] of 3"):
        refsam.merge_bank_shards([shards[0], shards[2]])
    with pytest.raises(InvalidInputError, match=r"overlapping shards: shard\(s\) \[2\] of 3"):
        refsam.merge_bank_shards(shards + [shards[2]])
    other = refsam.counterfactual_bank(problem, sam, run, X_TEST[:5], Y_TEST[:5], n_subsets=K, shard=(1, 3))
    with pytest.raises(InvalidInputError, match=r"another problem \(fingerprint differs\)"):
        refsam.merge_bank_shards([shards[0], other, shards[2]])
    with pytest.raises(InvalidInputError, match=r"`shard` N = 9 exceeds the 3 blocks"):
        refsam.counterfactual_bank(problem, sam, run, X_TEST, Y_TEST, n_subsets=K, shard=(0, 9))
    problem_r, sam_r, fp = root
    bank = refsam.counterfactual_bank(problem_r, sam_r, fp, X_TEST, Y_TEST, n_subsets=2)
    with pytest.raises(InvalidInputError, match=r"another problem \(fingerprint differs\)"):
        with_context(bank, problem, sam, run, X_TEST, Y_TEST)


def test_save_is_atomic_and_never_overwrites_a_foreign_file(root, tmp_path):
    problem, sam, fp = root
    bank = refsam.counterfactual_bank(problem, sam, fp, X_TEST, Y_TEST, n_subsets=3)
    (tmp_path / "bank.json").write_text("my notes")
    with pytest.raises(InvalidInputError, match=r"refusing to overwrite .*bank\.json.*refsam did not "
                                                r"write it"):
        bank.save(tmp_path)
    assert (tmp_path / "bank.json").read_text() == "my notes" and not (tmp_path / "bank.npz").exists()
    bank.save(tmp_path / "b")
    bank.save(tmp_path / "b")  # its own files: replaced
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bank.json", "bank.npz"]  # no temp left
    back = refsam.load_bank(tmp_path / "b")
    assert np.array_equal(back.masks, bank.masks) and np.array_equal(back.outputs, bank.outputs)
    (tmp_path / "c").mkdir()
    with pytest.raises(InvalidInputError, match=r"holds no bank"):
        refsam.load_bank(tmp_path / "c")


def test_bad_bank_inputs_are_refused_naming_the_argument(root, minibatch_run):
    problem, sam, fp = root
    cases = [({"subset_ratio": 0.0}, r"`subset_ratio` must be a number in \(0, 1\]"),
             ({"subset_ratio": 0.001}, r"keeps no point of n = 60"),
             ({"n_subsets": 1}, r"`n_subsets` must be an int >= 2"),
             ({"kind": "loo"}, r"`kind` must be one of \['weights', 'retrain'\]"),
             ({"seed": 1.5}, r"`seed` must be an int"),
             ({"seeds": [1]}, r"`seeds` applies to kind='retrain' of a run only")]
    for kwargs, match in cases:
        with pytest.raises(InvalidInputError, match=match):
            refsam.counterfactual_bank(problem, sam, fp, X_TEST, Y_TEST, **kwargs)
    with pytest.raises(InvalidInputError, match=r"`target` must be a refsam.FixedPoint"):
        refsam.counterfactual_bank(problem, sam, fp.theta, X_TEST, Y_TEST)
    problem_m, sam_m, run = minibatch_run
    with pytest.raises(InvalidInputError, match=r"is not the rule the run recorded"):
        refsam.counterfactual_bank(problem_m, refsam.SAM(0.1), run, X_TEST, Y_TEST)
    with pytest.raises(InvalidInputError, match=r"batch_size 10 needs subsets of at least that many"):
        refsam.counterfactual_bank(problem_m, sam_m, run, X_TEST, Y_TEST, subset_ratio=0.1, kind="retrain")


# -- the all-removed batch -------------------------------------------------------------------------------
def test_a_replayed_batch_whose_points_are_all_removed_steps_on_weight_decay_alone():
    """Batches of 2 at subset_ratio 0.5: some batch of the run is all removed in most subsets. That step
    has F_B ≡ 0, g = 0, ε = 0: θ ← θ − η λ θ (no error, no NaN). Oracle: the run stepped by hand."""
    problem = refsam.Problem(refsam.LogisticRegression(), X_TRAIN[:20], Y_TRAIN[:20])
    sam = refsam.SAM(RHO)
    optimizer = refsam.SGD(LR, weight_decay=0.05)
    run = refsam.train(problem, sam, optimizer, 20, batch_size=2, seed=4)
    bank = refsam.counterfactual_bank(problem, sam, run, X_TEST, Y_TEST, n_subsets=6, seed=0)
    hits = 0
    for mask, row in zip(bank.masks, bank.outputs):
        w = mask.astype(float)
        theta = run.theta0.copy()
        for t, (idx, lr) in enumerate(zip(run.batches, run.lrs)):
            if not np.any(w[idx]):
                theta = theta - lr * 0.05 * theta  # the weight decay's step alone
                hits += 1
            else:
                descent = sam_gradient(problem, sam, theta, idx, w).descent
                theta = optimizer.update(t, float(lr), theta, optimizer.init_state(theta), descent)[0]
        assert np.all(np.isfinite(row))
        assert rel_err(row, problem.model.losses(theta, X_TEST, Y_TEST)) <= RTOL_REORDERED
    assert hits > 0  # the rule was exercised
    mask = next(m for m in bank.masks if any(not np.any(m[idx]) for idx in run.batches))
    with pytest.raises(refsam.ZeroGradientError):  # training itself keeps refusing SAM at g = 0
        refsam.replay(problem, run, weights=mask.astype(float))


@pytest.mark.parametrize("m_sharpness", [None, 2])
def test_removed_batches_zero_epsilon_column_by_column_in_a_block(m_sharpness):
    """A block (d, K) with weights (n, K): only the columns whose weights on the batch (or chunk) are all
    zero get ε = 0 and g̃ = 0; every other column is the ordinary step (a block's matrix products against
    one run's: to rounding). Without ``removed_batches`` the rule still refuses g = 0, and with an L2 term
    in the loss (g = λ θ ≠ 0) the rule applies as usual."""
    problem = refsam.Problem(refsam.LogisticRegression(), X_TRAIN[:20], Y_TRAIN[:20])
    sam = refsam.SAM(RHO, m_sharpness=m_sharpness)
    idx = np.array([0, 1, 2, 3])
    W = np.ones((20, 3))
    W[idx, 1] = 0.0  # column 1: the whole batch removed
    W[[0, 1], 2] = 0.0  # column 2: half the batch removed (with m = 2: its first chunk)
    theta = np.random.default_rng(0).standard_normal((problem.d, 3))
    block = sam_gradient(problem, sam, theta, idx, W, removed_batches=True)
    assert np.all(block.eps[:, 1] == 0) and np.all(block.descent[:, 1] == 0)  # exactly: θ' = θ − ηλθ
    assert np.all(block.w_hat[:, 1] == theta[:, 1])
    for k in (0, 2):
        if k == 2 and m_sharpness is not None:  # the removed chunk: ε_C = 0, g̃_C = 0; the other as usual
            other = sam_gradient(problem, sam, theta[:, k], idx[2:], W[:, k])
            ordinary = other._replace(eps=0.5 * other.eps, descent=0.5 * other.descent)
            with pytest.raises(refsam.ZeroGradientError):  # without the rule: the removed chunk refused
                sam_gradient(problem, sam, theta[:, k], idx, W[:, k])
        else:
            ordinary = sam_gradient(problem, sam, theta[:, k], idx, W[:, k])
        assert rel_err(block.eps[:, k], ordinary.eps) <= RTOL_REORDERED, k
        assert rel_err(block.descent[:, k], ordinary.descent) <= RTOL_REORDERED, k
        assert np.all(block.eps[:, k] != 0)
    one = sam_gradient(problem, sam, theta[:, 1], idx, W[:, 1], removed_batches=True)  # a single run too
    assert np.all(one.eps == 0) and np.all(one.descent == 0)
    with pytest.raises(refsam.ZeroGradientError):  # the ordinary step keeps refusing g = 0
        sam_gradient(problem, sam, theta[:, 1], idx, W[:, 1])
    with pytest.raises(refsam.ZeroGradientError):
        sam_gradient(problem, sam, theta, idx, W)
    with_l2 = refsam.Problem(refsam.LogisticRegression(), X_TRAIN[:20], Y_TRAIN[:20], l2=0.1)
    terms = sam_gradient(with_l2, sam, theta[:, 1], idx, W[:, 1], removed_batches=True)
    np.testing.assert_array_equal(terms.eps, sam_gradient(with_l2, sam, theta[:, 1], idx, W[:, 1]).eps)
    assert np.all(terms.eps != 0)


# -- group effects and the peers' formats ----------------------------------------------------------------
def test_group_effects_against_first_order_and_the_newton_step(root):
    problem, sam, fp = root
    influence = refsam.hessian_influence(problem, sam, fp, X_TEST, Y_TEST)
    bank = refsam.counterfactual_bank(problem, sam, fp, X_TEST, Y_TEST, subset_ratio=0.9, n_subsets=4)
    effects = refsam.group_effects(influence, bank, sizes=[3], per_size=2, top_k=[5])
    assert effects.names[:4] == ["bank"] * 4 and "top-5" in effects.names and "class 1" in effects.names
    np.testing.assert_array_equal(effects.actual[:4], bank.outputs - bank.base)
    np.testing.assert_allclose(effects.predicted[:4], -((~bank.masks).astype(float) @ influence),
                               rtol=1e-10, atol=1e-15)
    assert effects.newton is not None
    small = effects.sizes <= 10  # small groups: Newton (second order) beats first order
    assert np.abs(effects.newton - effects.actual)[small].mean() < np.abs(
        effects.predicted - effects.actual)[small].mean()
    rows = {(r["group"], r["removed"]): r for r in effects.summary()}
    assert rows[("top-5", 5)]["first_order_rel_err"] < 0.5


def test_peer_files_round_trip(root, tmp_path):
    problem, sam, fp = root
    bank = refsam.counterfactual_bank(problem, sam, fp, X_TEST, Y_TEST, n_subsets=5)
    refsam.export_bank(bank, tmp_path / "d", "dattri")
    gt = np.load(tmp_path / "d" / "gt_values.npy")
    indices = np.load(tmp_path / "d" / "indices.npy")
    np.testing.assert_array_equal(gt, -bank.outputs)  # dattri's sign: the target values negated
    assert indices.shape == (5, 30)
    assert all(set(np.flatnonzero(m)) == set(i) for m, i in zip(bank.masks, indices))
    back = refsam.import_bank(tmp_path / "d", "dattri", n=60)
    np.testing.assert_array_equal(back.masks, bank.masks)
    np.testing.assert_array_equal(back.outputs, bank.outputs)
    refsam.export_bank(bank, tmp_path / "k", "kronfluence")
    back = refsam.import_bank(tmp_path / "k", "kronfluence")
    np.testing.assert_array_equal(back.masks, bank.masks)
    np.testing.assert_array_equal(back.outputs, bank.outputs)
    with pytest.raises(InvalidInputError, match=r"trak's bank holds margins: build the bank with "
                                                r"output='margin'"):
        refsam.export_bank(bank, tmp_path / "t", "trak")
    margins = refsam.counterfactual_bank(problem, sam, fp, X_TEST, Y_TEST, n_subsets=5, output="margin")
    refsam.export_bank(margins, tmp_path / "t", "trak")
    back = refsam.import_bank(tmp_path / "t", "trak")
    np.testing.assert_array_equal(np.load(tmp_path / "t" / "masks.npy"), margins.masks)
    np.testing.assert_array_equal(back.outputs, margins.outputs)
    influence = refsam.hessian_influence(problem, sam, fp, X_TEST, Y_TEST)
    assert refsam.lds(influence, back).mean == pytest.approx(
        refsam.lds(influence, margins).mean, rel=1e-12)
    with pytest.raises(InvalidInputError, match=r"dattri's indices do not record n"):
        refsam.import_bank(tmp_path / "d", "dattri")
