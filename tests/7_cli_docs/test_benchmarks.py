"""Smoke test: benchmarks/run.py runs end to end at tiny sizes and writes every stable JSON key.

No timing assertions (timings on a shared machine are not reproducible); it checks that the script
still runs against the current API, that each ratio and exponent is a finite number, and that the
exactness checks the benchmarks carry along (adjoint = autodiff, Hessians = autograd) hold.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

from refsam.tolerances import RTOL_CASE_EXACT, RTOL_DERIVATIVE, RTOL_EXACT_METHODS, RTOL_REORDERED

ROOT = Path(__file__).resolve().parents[2]
STABLE_KEYS = ("closed_form_vs_loo_speedup", "adjoint_over_training", "adjoint_over_training_logistic",
               "adjoint_over_training_mlp", "autodiff_over_adjoint", "softmax_hessian_dgemm_fraction",
               "closed_form_over_unavoidable", "training_step_over_gemv", "loo_block_speedup",
               "loo_parallel_speedup", "resolve_block_speedup", "loo_two_process_ceiling",
               "adam_adjoint_over_training", "user_model_adjoint_over_builtin",
               "user_mlp_adjoint_over_builtin", "root_solve_jacobians", "root_solve_over_training",
               "self_influence_diagonal_speedup")


def test_benchmark_script_writes_finite_stable_keys(tmp_path):
    out = tmp_path / "results.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--tiny", "--json", str(out)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert "adjoint_over_training" in completed.stdout  # the summary is printed
    results = json.loads(out.read_text())
    for key in STABLE_KEYS:
        assert math.isfinite(results[key]) and results[key] > 0, key
    assert results["adjoint_over_training"] == max(results["adjoint_over_training_logistic"],
                                                   results["adjoint_over_training_mlp"])
    assert results["adam_adjoint_over_training"] == max(
        run["ratio"] for run in results["adam_adjoint_over_training_runs"].values())
    user_runs = results["user_model_runs"]  # the headline pair, and the same at a larger batch
    assert set(user_runs) == {"logistic", "mlp", "logistic_large_batch", "mlp_large_batch"}
    assert results["user_model_adjoint_over_builtin"] == user_runs["logistic"]["ratio"]
    for model in ("logistic", "mlp"):
        assert user_runs[f"{model}_large_batch"]["batch_size"] > user_runs[model]["batch_size"]
    for run in user_runs.values():  # the user model's influence is the built-in's
        assert run["max_rel_diff_user_vs_builtin"] <= RTOL_EXACT_METHODS
        # the floor's forward-over-reverse computes refsam's (H v, J v) (entries up to ~50 here)
        assert run["per_step"]["forward_over_reverse_max_abs_diff"] <= 1e-12
        assert run["per_step"]["autograd_floor_over_builtin_step"] > 0
    for run in results["root_solve_runs"].values():  # the benchmark's root is verified and stable
        assert run["ptc"]["converged"] and run["ptc"]["residual"] <= 1e-10 and run["ptc"]["stable"]
        # lagged Jacobians with Krylov corrections: the root a fresh Jacobian per step reaches, in fewer
        # of them, and the Krylov corrections took part (products of J, counted: ≈ 1000 at the tiny sizes)
        assert run["ptc"]["distance_to_fresh_jacobians_root"] <= 1e-9
        assert run["ptc"]["jacobians"] < run["ptc_fresh_jacobians"]["jacobians"]
        assert run["ptc"]["jacobian_products"] > 0
    assert results["autodiff_vs_adjoint"]["rel_err_adjoint_vs_autodiff"] <= RTOL_EXACT_METHODS
    for run in results["self_influence_diagonal"]["methods"].values():  # the same terms, summed per row
        assert run["max_rel_diff"] <= RTOL_REORDERED
    assert results["hardware"]["loo"]["rel_err_block_vs_single"] <= RTOL_REORDERED  # blocks = one at a time
    assert results["hardware"]["loo"]["parallel_identical"]
    # block chord re-solves against one Newton re-solve per point: the same roots to rounding
    assert results["closed_form_vs_loo"]["block_vs_one_at_a_time_rel_diff"] <= RTOL_REORDERED
    hessian = results["mlp_hessian_d2000"]
    atol_hessian = RTOL_DERIVATIVE * hessian["max_abs_entry"]  # same derivative, reordered sums
    assert hessian["max_abs_entry"] > 0
    assert set(hessian["seconds"]) == {"autograd", "hvp_blocks", "layerwise"}
    assert all(diff <= atol_hessian for diff in hessian["max_abs_diff"].values())
    # the peers (pyDVL, dattri) are optional: measured where installed, skipped with a reason where not
    for peer, key in (("pydvl", "pydvl_direct_over_refsam"), ("dattri", "dattri_explicit_over_refsam")):
        if peer in results["peers_skipped"]:
            assert key not in results and results["peers_skipped"][peer]
            continue
        assert all(math.isfinite(r) and r > 0 for r in results[key].values()), key
        for run in results["peers_runs"].values():  # the peer's scores are refsam's, converted
            assert run["max_rel_diff"][peer] <= RTOL_CASE_EXACT, (peer, run)
    for method, rows in results["scaling"].items():
        for row in rows:
            assert len(row["sizes"]) == len(row["seconds"]) == len(row["peak_bytes"]) >= 2, method
            assert math.isfinite(row["exponent"]), (method, row["axis"])
            assert all(b > 0 for b in row["peak_bytes"]), (method, row["axis"])
