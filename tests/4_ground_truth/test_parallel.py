"""The ground truth's per-point loop on an executor: a caller's ThreadPoolExecutor, a process pool of
n_jobs workers, or a Dask cluster's executor give the serial result bit for bit."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import refsam
from refsam.errors import InvalidInputError
from refsam.ground_truth import (
    finite_difference_influence,
    finite_difference_parameters,
    finite_difference_replay,
    leave_one_out,
    leave_one_out_replay,
)


@pytest.fixture(scope="module")
def setup():
    X, y, _ = refsam.make_gaussian_classification(n=27, n_features=3, n_classes=3, seed=2)
    problem = refsam.Problem(refsam.SoftmaxRegression(3), X[:24], y[:24])
    sam = refsam.SAM(0.05)
    trajectory = refsam.train(problem, sam, refsam.SGD(0.5, weight_decay=0.05), 12, batch_size=8, seed=1)
    root = refsam.solve_fixed_point(problem, sam, np.zeros(problem.d), optimizer=trajectory.optimizer())
    assert root.optimizer.weight_decay == 0.05  # the FixedPoint carries λ to the re-solving ground truth
    return problem, sam, trajectory, root, X[24:], y[24:]


def _calls(setup, **parallel):
    problem, sam, trajectory, root, X_test, y_test = setup
    idx = np.array([0, 3, 4, 9, 10, 17, 23])
    return {
        "finite_difference_replay": finite_difference_replay(problem, trajectory, X_test, y_test, idx,
                                                             **parallel),
        "leave_one_out_replay": leave_one_out_replay(problem, trajectory, X_test, y_test, idx, **parallel),
        "finite_difference_influence": finite_difference_influence(problem, sam, root, X_test, y_test, idx,
                                                                   **parallel),
        "finite_difference_parameters": finite_difference_parameters(problem, sam, root, idx, **parallel),
        "leave_one_out": leave_one_out(problem, sam, root, X_test, y_test, idx, **parallel),
    }


def test_threads_and_processes_give_the_serial_result_bit_for_bit(setup):
    serial = _calls(setup)
    assert all(np.ptp(v) > 0 for v in serial.values())
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = _calls(setup, executor=pool)
    processes = _calls(setup, n_jobs=2)
    for name, expected in serial.items():
        np.testing.assert_array_equal(threaded[name], expected, err_msg=name)
        np.testing.assert_array_equal(processes[name], expected, err_msg=name)


def test_a_dask_cluster_executor_gives_the_serial_result(setup):
    distributed = pytest.importorskip("dask.distributed")
    problem, _, trajectory, _, X_test, y_test = setup
    serial = leave_one_out_replay(problem, trajectory, X_test, y_test)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        on_dask = leave_one_out_replay(problem, trajectory, X_test, y_test, executor=client.get_executor())
    np.testing.assert_array_equal(on_dask, serial)


def test_parallel_progress_reports_every_finished_chunk(setup, capsys):
    problem, _, trajectory, _, X_test, y_test = setup
    with ThreadPoolExecutor(max_workers=2) as pool:
        leave_one_out_replay(problem, trajectory, X_test, y_test, [0, 1, 2], progress=True, executor=pool)
    err = capsys.readouterr().err
    assert "leave-one-out: replayed 3/3 points" in err


@pytest.mark.parametrize("kwargs, message", [
    ({"executor": "pool"}, r"`executor` must be a concurrent.futures.Executor .*got str"),
    ({"n_jobs": 0}, r"`n_jobs` must be an int >= 1, or -1 for every CPU, got 0"),
    ({"n_jobs": 2.0}, r"`n_jobs` must be an int >= 1"),
    ({"n_jobs": True}, r"`n_jobs` must be an int >= 1"),
    ({"n_jobs": 2, "executor": ThreadPoolExecutor(1)}, r"give `executor` or `n_jobs`, not both"),
])
def test_bad_parallel_arguments_are_refused(setup, kwargs, message):
    problem, _, trajectory, _, X_test, y_test = setup
    with pytest.raises(InvalidInputError, match=message):
        leave_one_out_replay(problem, trajectory, X_test, y_test, **kwargs)


def test_the_demo_ground_truth_on_two_processes_is_the_serial_one():
    from refsam import apps

    X, y, _ = refsam.make_gaussian_classification(n=40, n_features=3, seed=3)
    problem = refsam.Problem(refsam.LogisticRegression(), X[:32], y[:32])
    fit_ = apps.fit(problem, refsam.SAM(0.05), refsam.SGD(0.5, weight_decay=0.05), 200)
    subset = np.arange(0, 32, 5)
    serial = apps.ground_truth(fit_, X[32:], y[32:], subset)
    parallel = apps.ground_truth(fit_, X[32:], y[32:], subset, n_jobs=2)
    assert np.isfinite(serial.loo_root).all()  # the re-solving half ran too
    for name in ("loo_run", "derivative_run", "derivative_root", "loo_root"):
        np.testing.assert_array_equal(getattr(parallel, name), getattr(serial, name), err_msg=name)
