"""Reading the results: the one-screen summary ``run.py`` prints and the README's tables (``--markdown``).

Both read only the results dict (the JSON ``run.py`` writes), so old results files render the same way.
"""

from __future__ import annotations


def format_summary(results: dict) -> str:
    """A human-readable digest of the JSON."""
    machine = results["machine"]
    lines = [f"mode={results['mode']}  total {results['total_seconds']:.1f} s  (BLAS threads: "
             f"{machine['blas_threads']}; load average {machine['load_average_at_start'][0]:.1f} at start, "
             f"{machine['load_average_at_end'][0]:.1f} at end, {machine['cpu_count']} CPUs)"]
    loo = results["closed_form_vs_loo"]
    lines.append(f"closed_form_vs_loo_speedup = {results['closed_form_vs_loo_speedup']:.0f}x  "
                 f"(closed form {loo['closed_form_seconds'] * 1e3:.1f} ms vs LOO "
                 f"{loo['loo_seconds_all_n_extrapolated']:.1f} s; {loo['note']}; "
                 f"Pearson(−I, actual) = {loo['pearson_prediction_vs_actual']:.4f})  target >= 1000; "
                 f"refsam's block re-solves: {loo['resolve_block_speedup']:.0f}x the one-at-a-time")
    for key, run in results["adjoint_over_training_runs"].items():
        lines.append(f"{key}: n={run['n']} d={run['d']} T={run['steps']} batch={run['batch_size']}: "
                     f"training {run['training_seconds']:.3f} s, adjoint {run['adjoint_seconds']:.3f} s, "
                     f"ratio {run['ratio']:.2f}")
    lines.append(f"adjoint_over_training = {results['adjoint_over_training']:.2f}  (logistic "
                 f"{results['adjoint_over_training_logistic']:.2f}, MLP "
                 f"{results['adjoint_over_training_mlp']:.2f})  target <= 3")
    ba = results["adjoint_mlp_before_after"]
    lines.append(f"MLP adjoint / training before → after (d={ba['d']}, T={ba['steps']}, "
                 f"batch {ba['batch_size']}): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in ba["over_training"].items()))
    lines.append(f"autodiff_over_adjoint = {results['autodiff_over_adjoint']:.1f}  (rel. err "
                 f"{results['autodiff_vs_adjoint']['rel_err_adjoint_vs_autodiff']:.1e})")
    h = results["mlp_hessian_d2000"]
    times = ", ".join(f"{k} {v:.3f} s" for k, v in h["seconds"].items())
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in h["max_abs_diff"].items())
    lines.append(f"mlp_hessian_d2000 (d={h['d']}, n={h['n']}): {times}; max |diff| vs {h['reference']}: "
                 f"{diffs}")
    for key, row in results["derivative_products"].items():
        costs = ", ".join(f"{k} {v:.2f}" for k, v in row["in_gradients"].items())
        lines.append(f"MLP d={row['d']} {key}, cost in gradients: {costs}")
    parts = results["closed_form_mlp_parts"]
    lines.append(f"closed form parts, MLP d={parts['d']} n={parts['n']}: "
                 + ", ".join(f"{k} {v:.2f} s" for k, v in parts["seconds"].items()))
    hw = results["hardware"]
    sh, cf = hw["softmax_hessian"], hw["closed_form_over_unavoidable"]
    st, lo = hw["training_step_over_gemv"], hw["loo"]
    lines.append(f"softmax_hessian_dgemm_fraction = {results['softmax_hessian_dgemm_fraction']:.2f}  "
                 f"(d={sh['d']}, n={sh['n']}: {sh['gflops']:.1f} GFLOP/s vs dgemm "
                 f"{sh['dgemm_gflops']:.1f})  target >= 0.25")
    lines.append(f"closed_form_over_unavoidable = {results['closed_form_over_unavoidable']:.2f}  (logistic "
                 f"d={cf['d']}, n={cf['n']}: {cf['closed_form_seconds'] * 1e3:.1f} ms vs Hessian + LU "
                 f"{cf['unavoidable_seconds'] * 1e3:.1f} ms)  target <= 2; the two Hessians + LU the full "
                 f"variant needs: {cf['floor_ratio']:.2f}, closed form over them "
                 f"{cf['over_its_hessians']:.2f}, "
                 f"frozen variant {cf['frozen_ratio']:.2f}")
    lines.append(f"training_step_over_gemv = {results['training_step_over_gemv']:.2f}  (full-batch logistic "
                 f"n={st['n']}, d={st['d']}: {st['seconds_per_step'] * 1e3:.2f} ms/step vs four GEMVs "
                 f"{st['four_gemv_seconds'] * 1e3:.2f} ms)  target <= 2")
    lines.append(f"loo_block_speedup = {results['loo_block_speedup']:.1f}  target >= 10; "
                 f"loo_parallel_speedup = {results['loo_parallel_speedup']:.2f}  target >= 1.6  "
                 f"(k={lo['k']} points, n={lo['n']}, d={lo['d']}, T={lo['steps']}; block vs single rel. err "
                 f"{lo['rel_err_block_vs_single']:.1e}, 2 processes identical: {lo['parallel_identical']}; "
                 f"two independent processes of the serial job: {lo['two_process_ceiling']:.2f})")
    if "lds_bank_block_speedup" in results:
        lines.append(f"lds_bank_block_speedup = {results['lds_bank_block_speedup']:.1f}  target >= 5; "
                     f"bank of 100 / training: run {results['bank_over_training_run']:.2f}, root "
                     f"{results['bank_over_training_root']:.2f}")
    for label, run in results.get("peers_runs", {}).items():
        lines.append(f"peers {label} (d={run['d']}): " + ", ".join(
            f"{peer} {ratio:.1f}x refsam (max rel. diff {run['max_rel_diff'][peer]:.1e})"
            for peer, ratio in run["over_refsam"].items()))
    if "root_solve_jacobians" in results:
        lines.append(f"root_solve_jacobians = {results['root_solve_jacobians']}  target <= 15; "
                     f"root_solve_over_training = {results['root_solve_over_training']:.2f}")
    if "adam_adjoint_over_training" in results:
        lines.append(f"adam_adjoint_over_training = {results['adam_adjoint_over_training']:.2f}  "
                     f"target <= 2.5 (AdamW + SAM, clip 1.0, warm-up + cosine)")
    lines.append("scaling exponents (log-log fit):")
    for method, rows in results["scaling"].items():
        parts = [f"{row['axis']}: {row['exponent']:.2f}" for row in rows]
        lines.append(f"  {method:24s} " + ", ".join(parts))
    return "\n".join(lines)


def _fmt_seconds(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def adam_markdown_rows(results: dict) -> list[str]:
    """The rows of the key table for ``adam_adjoint_over_training`` (``benchmarks/run.py --markdown``)."""
    runs = results["adam_adjoint_over_training_runs"]
    ratio = results["adam_adjoint_over_training"]
    rows = [f"| `adam_adjoint_over_training` | **{ratio:.2f}×** | ≤ 2.5× | max of the two below |"]
    for r in runs.values():
        rows.append(f"| (AdamW, {r['model']}) | {r['ratio']:.2f}× | — | {r['optimizer']}, n={r['n']}, "
                    f"d={r['d']}, T={r['steps']}, batch {r['batch_size'] or 'full'}, 1 test loss: training "
                    f"{_fmt_seconds(r['training_seconds'])}, adjoint {_fmt_seconds(r['adjoint_seconds'])} |")
    return rows


def bank_markdown_rows(results: dict) -> list[str]:
    """The rows of the README's key table for the bank keys (``benchmarks/run.py --markdown``)."""
    rows = []
    for key, r in results["bank_block_speedups"].items():
        name = "`lds_bank_block_speedup`" if r["speedup"] == results["lds_bank_block_speedup"] else f"({key})"
        bold = "**" if name.startswith("`") else ""
        rows.append(f"| {name} | {bold}{r['speedup']:.1f}×{bold} | {'≥ 5×' if bold else '—'} | bank of "
                    f"{r['n_subsets']} re-solved roots, subset_ratio {r['subset_ratio']}, logistic "
                    f"n={r['n']}, d={r['d']}: in blocks {r['bank_seconds'] * 1e3:.1f} ms, one re-solve at a "
                    f"time {r['single_seconds_extrapolated'] * 1e3:.1f} ms (timed on {r['timed_single']}, "
                    f"extrapolated; rel. diff {r['rel_diff_bank_vs_single']:.1e}) |")
    for key, r in results["bank_over_training"].items():
        rows.append(f"| `bank_over_training_{key}` | {r['ratio']:.2f}× | — | bank of {r['n_subsets']} "
                    f"(subset_ratio 0.5) / the training run, logistic n={r['n']}, d={r['d']}, "
                    f"T={r['steps']}, batch {r['batch_size'] or 'full'}: {r['bank_seconds'] * 1e3:.1f} ms / "
                    f"{r['training_seconds'] * 1e3:.1f} ms |")
    return rows


def peer_markdown_rows(results: dict) -> list[str]:
    """The rows of the key table for refsam against pyDVL and dattri at ρ = 0 (``benchmarks/peers.py``)."""
    rows = []
    names = {"pydvl": ("pydvl_direct_over_refsam", "pyDVL `DirectInfluence`"),
             "dattri": ("dattri_explicit_over_refsam", "dattri `IFAttributorExplicit`")}
    for peer, (key, call) in names.items():
        runs = results.get("peers_runs", {})
        for label, ratio in sorted(results.get(key, {}).items(),
                                   key=lambda item: (runs[item[0]]["model"], runs[item[0]]["d"])):
            r = runs[label]
            rows.append(f"| `{key}` ({label}) | {ratio:.1f}× | — | {call} / refsam's closed form at ρ = 0, "
                        f"{r['model']} n={r['n']}, d={r['d']}, {r['m']} test losses, "
                        f"λ = {r['weight_decay']:g} at {r['theta']}: {_fmt_seconds(r['seconds'][peer])} "
                        f"against {_fmt_seconds(r['seconds']['refsam'])} (max abs diff "
                        f"{r['max_abs_diff'][peer]:.1e}, relative to the largest score "
                        f"{r['max_rel_diff'][peer]:.1e}) |")
    for peer, why in results.get("peers_skipped", {}).items():
        rows.append(f"| `{names[peer][0]}` | — | — | not measured: {why} |")
    return rows


def root_markdown_rows(results: dict) -> list[str]:
    """The rows of the README's key table for the root-solver keys (``benchmarks/run.py --markdown``)."""
    rows = []
    for r in sorted(results["root_solve_runs"].values(), key=lambda run: run["steps"]):
        ptc, hybr = r["ptc"], r["hybr"]
        headline = "ratio" in r
        name = "`root_solve_jacobians`" if headline else f"(from {r['steps']} steps)"
        value = ptc["jacobians"] if ptc["converged"] else "no root"
        bold = "**" if headline else ""
        other = (f"hybr: {hybr['jacobians']} J, spectral radius {hybr['spectral_radius']:.6f}, "
                 f"{hybr['distance_from_end_point']:.3f} away" if hybr["converged"] else "hybr: no root")
        setting = (f"ptc from the end of a {r['steps']}-step run, tanh MLP n={r['n']}, d={r['d']} "
                   f"(‖G‖ = {r['start_residual']:.1e}, {r['start_negative_eigenvalues']} eigenvalues of J "
                   f"with Re < 0)")
        if ptc["converged"]:
            setting += (f": ‖G‖ = {ptc['residual']:.0e}, spectral radius {ptc['spectral_radius']:.6f}, "
                        f"{ptc['distance_from_end_point']:.3f} from the end point")
            if "jacobian_products" in ptc:
                setting += f", and {ptc['jacobian_products']} products of J in its Krylov corrections"
            setting += f"; {other}"
        fresh = r.get("ptc_fresh_jacobians")
        if fresh and fresh["converged"] and "distance_to_fresh_jacobians_root" in ptc:
            setting += (f"; with a fresh J per step and chord corrections only (the slow reference): "
                        f"{fresh['jacobians']} J, the same root to "
                        f"{ptc['distance_to_fresh_jacobians_root']:.0e}")
        rows.append(f"| {name} | {bold}{value}{bold} | {'≤ 15' if headline else '—'} | {setting} |")
        if headline:
            rows.append(f"| `root_solve_over_training` | {r['ratio']:.2f}× | — | the solve "
                        f"{_fmt_seconds(r['solve_seconds'])} / the {r['steps']}-step training run "
                        f"{_fmt_seconds(r['training_seconds'])} |")
    return rows


def format_markdown(results: dict) -> str:
    """The README's tables, generated from a results JSON (``--markdown RESULTS.json``)."""
    out = []
    loo = results["closed_form_vs_loo"]
    adj = results["adjoint_over_training_runs"]
    ad = results["autodiff_vs_adjoint"]
    out += ["| key | value | target | setting |", "|---|---|---|---|",
            f"| `closed_form_vs_loo_speedup` | **{results['closed_form_vs_loo_speedup']:.0f}×** | ≥ 1000× | "
            f"logistic n={loo['n']}, d={loo['d']}, {loo['n_test']} test losses; closed form "
            f"{_fmt_seconds(loo['closed_form_seconds'])}, LOO {_fmt_seconds(loo['loo_seconds_per_resolve'])}"
            f" per re-solve × n = {_fmt_seconds(loo['loo_seconds_all_n_extrapolated'])} ({loo['note']}) |",
            f"| `resolve_block_speedup` | {loo['resolve_block_speedup']:.0f}× | — | refsam's leave-one-out "
            f"ground truth (chord re-solves in blocks) on all n: "
            f"{_fmt_seconds(loo['block_resolve_seconds_all_n'])} against the one-at-a-time "
            f"{_fmt_seconds(loo['loo_seconds_all_n_extrapolated'])} (rel. diff "
            f"{loo['block_vs_one_at_a_time_rel_diff']:.1e}) |",
            f"| `adjoint_over_training` | **{results['adjoint_over_training']:.2f}×** | ≤ 3× | "
            f"max of the two below |"]
    for key, name in (("adjoint_logistic", "logistic"), ("adjoint_mlp", "mlp")):
        r = adj[key]
        out.append(f"| `adjoint_over_training_{name}` | **{r['ratio']:.2f}×** | ≤ 3× | {r['model']} "
                   f"n={r['n']}, d={r['d']}, T={r['steps']}, batch {r['batch_size']}, 1 test loss: training "
                   f"{_fmt_seconds(r['training_seconds'])}, adjoint {_fmt_seconds(r['adjoint_seconds'])} |")
    out.append(f"| `autodiff_over_adjoint` | {results['autodiff_over_adjoint']:.1f}× | — | "
               f"logistic n={ad['n']}, T={ad['steps']}, batch {ad['batch_size']}; rel. err. adjoint vs "
               f"autodiff {ad['rel_err_adjoint_vs_autodiff']:.1e} |")
    if "self_influence_diagonal_speedup" in results:
        si = results["self_influence_diagonal"]
        parts = "; ".join(f"{m} {_fmt_seconds(r['matrix_seconds'])} → {_fmt_seconds(r['diagonal_seconds'])}"
                          f" (rel. diff {r['max_rel_diff']:.1e})" for m, r in si["methods"].items())
        out.append(f"| `self_influence_diagonal_speedup` | {si['speedup']:.0f}× | — | self-influence of "
                   f"the approximations, the n × n matrix's diagonal / `trajectory_self_influence`, "
                   f"{si['model']} n={si['n']}, d={si['d']}, T={si['steps']}, batch {si['batch_size']}: "
                   f"{parts} |")
    hw = results.get("hardware")
    if hw is not None:
        sh, cf = hw["softmax_hessian"], hw["closed_form_over_unavoidable"]
        st, lo = hw["training_step_over_gemv"], hw["loo"]
        out += [f"| `softmax_hessian_dgemm_fraction` | **{sh['fraction_of_dgemm']:.2f}** | ≥ 0.25 | softmax "
                f"n={sh['n']}, d={sh['d']}: {sh['gflops']:.1f} GFLOP/s against a same-size dgemm's "
                f"{sh['dgemm_gflops']:.1f} |",
                f"| `closed_form_over_unavoidable` | **{cf['ratio']:.2f}×** | ≤ 2× | logistic n={cf['n']}, "
                f"d={cf['d']}: closed form {_fmt_seconds(cf['closed_form_seconds'])}, one Hessian + one LU "
                f"{_fmt_seconds(cf['unavoidable_seconds'])}; the two Hessians + one LU the full SAM variant "
                f"cannot skip: {cf['floor_ratio']:.2f}× (closed form over them "
                f"{cf['over_its_hessians']:.2f}×); frozen variant (one Hessian) {cf['frozen_ratio']:.2f}× |",
                f"| `training_step_over_gemv` | **{st['ratio']:.2f}×** | ≤ 2× | full-batch logistic "
                f"n={st['n']}, d={st['d']}: {_fmt_seconds(st['seconds_per_step'])} per SAM step, four GEMVs "
                f"{_fmt_seconds(st['four_gemv_seconds'])} |",
                f"| `loo_block_speedup` | **{lo['loo_block_speedup']:.1f}×** | ≥ 10× | {lo['k']} "
                f"leave-one-out replays, logistic n={lo['n']}, d={lo['d']}, T={lo['steps']}: one at a time "
                f"{_fmt_seconds(lo['one_at_a_time_seconds'])}, in blocks {_fmt_seconds(lo['block_seconds'])} "
                f"(rel. diff {lo['rel_err_block_vs_single']:.1e}) |",
                f"| `loo_parallel_speedup` | **{lo['loo_parallel_speedup']:.2f}×** | ≥ 1.6× | all {lo['n']} "
                f"points in blocks: 1 process {_fmt_seconds(lo['all_points_one_process_seconds'])}, "
                f"2 processes {_fmt_seconds(lo['two_process_seconds'])} "
                f"(identical: {lo['parallel_identical']}); the machine's own ceiling for this job, two "
                f"independent processes running it at once: {lo['two_process_ceiling']:.2f}× |"]
    if "lds_bank_block_speedup" in results:
        out += bank_markdown_rows(results)
    if "adam_adjoint_over_training" in results:
        out += adam_markdown_rows(results)
    if "peers_skipped" in results:
        out += peer_markdown_rows(results)
    if "root_solve_jacobians" in results:
        out += root_markdown_rows(results)
    if "user_model_adjoint_over_builtin" in results:
        for key, r in results["user_model_runs"].items():
            model = key.removesuffix("_large_batch")
            name = f"`user_{'model' if model == 'logistic' else 'mlp'}_adjoint_over_builtin`"
            name, target = (f"({name} at batch {r['batch_size']})", "—") if model != key else (name, "≤ 3×")
            out.append(f"| {name} | **{r['ratio']:.1f}×** | {target} | the trajectory adjoint of {model} "
                       f"written as a user model (autograd derivatives) over the built-in, n={r['n']}, "
                       f"d={r['d']}, T={r['steps']}, batch {r['batch_size']}: "
                       f"{_fmt_seconds(r['user_seconds'])} against {_fmt_seconds(r['builtin_seconds'])} "
                       f"(max rel. diff "
                       f"{r['max_rel_diff_user_vs_builtin']:.1e}) |")
    out += ["", "Adjoint (all n, one test loss) against the training run that recorded it:", "",
            "| run | model | n | d | T | batch | training | adjoint | ratio |", "|---" * 9 + "|"]
    for key, r in adj.items():
        out.append(f"| {key} | {r['model']} | {r['n']} | {r['d']} | {r['steps']} | "
                   f"{r['batch_size'] or 'full'} | {_fmt_seconds(r['training_seconds'])} | "
                   f"{_fmt_seconds(r['adjoint_seconds'])} | {r['ratio']:.2f}× |")
    ba = results["adjoint_mlp_before_after"]
    out += ["", f"MLP adjoint along the optimisations (n={ba['n']}, d={ba['d']}, T={ba['steps']}, batch "
            f"{ba['batch_size']}, one test loss; all variants give the same influence):", "",
            "| variant | time | / training | max rel. diff to current |", "|---|---|---|---|"]
    for k, t in ba["seconds"].items():
        diff = ba["max_rel_diff_to_current"].get(k)
        out.append(f"| {k} | {_fmt_seconds(t)} | {ba['over_training'][k]:.2f}× | "
                   f"{'—' if diff is None else f'{diff:.1e}'} |")
    h = results["mlp_hessian_d2000"]
    out += ["", f"MLP Hessian, tanh, sizes {tuple(h['sizes'])}, d = {h['d']}, n = {h['n']} "
            f"(largest entry {h['max_abs_entry']:.2e}):", "",
            "| approach | time | speed-up vs autograd | max abs diff vs autograd |", "|---|---|---|---|"]
    labels = {"autograd": "`autograd.hessian` (`refsam.models.AutogradDerivatives`)",
              "hvp_blocks": "R-operator HVP on blocks of 256 identity rows",
              "layerwise": "layer-wise assembly from pre-activation tangents (`MLP.hessian`)"}
    for name in ("autograd", "hvp_blocks", "layerwise"):
        if name in h["seconds"]:
            out.append(f"| {labels[name]} | {_fmt_seconds(h['seconds'][name])} | {h['speedup'][name]:.1f}× | "
                       f"{h['max_abs_diff'][name]:.1e} |")
    products = results["derivative_products"]
    names = list(next(iter(products.values()))["seconds"])
    out += ["", "MLP derivative products, tanh, d = "
            f"{next(iter(products.values()))['d']}: time per call (in units of one batch gradient):", "",
            "| batch | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in products.values():
        out.append(f"| {row['batch']} | " + " | ".join(
            f"{_fmt_seconds(row['seconds'][k])} ({row['in_gradients'][k]:.2f})" for k in names) + " |")
    parts = results["closed_form_mlp_parts"]
    out += ["", f"Closed form for an MLP, d = {parts['d']}, n = {parts['n']}: where the time goes", "",
            "| part | time |", "|---|---|"]
    out += [f"| {k} | {_fmt_seconds(v)} |" for k, v in parts["seconds"].items()]
    out += ["", "Scaling (one axis varied, the others at the base sizes; exponent = log-log least-squares "
            "slope; peak = tracemalloc peak):", "",
            "| method | axis | sizes | times | peak memory | exponent |", "|---|---|---|---|---|---|"]
    for method, rows in results["scaling"].items():
        for row in rows:
            out.append(f"| {method} | {row['axis']} | {', '.join(map(str, row['sizes']))} | "
                       f"{', '.join(_fmt_seconds(t) for t in row['seconds'])} | "
                       f"{', '.join(f'{b / 2**20:.1f}' for b in row['peak_bytes'])} MiB | "
                       f"{row['exponent']:.2f} |")
    return "\n".join(out)
