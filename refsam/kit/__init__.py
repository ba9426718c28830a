"""The oracle kit: a versioned suite of small reference cases, the checker for external scores, and (in
`refsam.kit.testing`, with the test extra) hypothesis strategies and a derivative oracle.

A *case* is one tiny SAM run recorded completely — data, θ_0, configuration, batch schedule, learning
rates, the trajectory — together with the exact influence refsam computes for it and a finite-difference
ground truth. A faster implementation (PyTorch, JAX, …) reads the cases with plain numpy and json, computes
its own influence scores, and `check_scores()` compares them (``refsam check DIR --scores FILE``).

Conventions
-----------
* Influence as everywhere in refsam: ``scores[j, k] = I_j(f_k) = ∂ f_k(θ_T(w)) / ∂ w_j`` at
  w = 1, where f_k(θ) = ℓ(z_k^test, θ) is the (unweighted) loss of test point k. Shape (n_train, n_test).
* A directory holds ``manifest.json`` and one ``<case id>.npz`` per case. The manifest carries the schema
  version, every case's configuration, the sha256 of every case file, and for every stored output the
  tolerance a comparison against it should use. ``.npz`` files load with ``allow_pickle=False``.
* Comparison of scores S with a reference R: ``max_abs_err = ‖S − R‖_∞``,
  ``rel_err = max_abs_err / max(‖R‖_∞, 1e-300)``; a case passes iff
  ``max_abs_err <= atol + rtol · ‖R‖_∞`` with that output's (rtol, atol). The Spearman rank correlation
  of the flattened arrays is reported beside it (informative, not part of the verdict).
* The suite spans model (logistic, softmax, mlp) × rule (sam, usam, asam) × penalty (λ as the optimizer's
  ``weight_decay`` or as the loss's ``l2``) × batching (full, minibatch): 36 cases, plus 6 with momentum,
  9 with the presets of the public implementations, 6 with Adam and AdamW (a warm-up + cosine
  schedule, gradient clipping) and 27 with the SAM variants' presets (docs/variants.md) (84 in all),
  each n_train = 12, n_test = 3, d ≤ 20, T = 20. ``RULES`` lists every rule a case may name; the grid's
  rule axis is the first three (``refsam.sam.BASE_RULES``).

Outputs stored per case (shape (n_train, n_test) unless noted):
    trajectory       exact trajectory influence, adjoint recursion                         every case
    trajectory_fd    central finite differences of replays with w_j = 1 ± h (ground truth) every case
    trajectory_parameters   dθ_T/dw_j, shape (n_train, n_params), checked against ``trajectory``
                     by the chain rule; for debugging a port one derivative at a time   every case
    closed_form      closed form at a verified root θ̂, variant "full"
    closed_form_frozen, closed_form_erm   the two ablations at the same root
    closed_form_fd   central finite differences of the re-solved root (ground truth)
The closed-form outputs exist only for full-batch cases with the optimizer's weight decay whose root was
found and verified
(‖G(θ̂)‖ ≤ 1e-10 and closed form = re-solved finite differences ≤ 1e-6); the manifest says why otherwise.
The full schema is documented in docs/validating.md.

Trust: `check_scores()` grades against references it recomputes from the suite's recipe
(`refsam.kit.suite.recompute_case()`), takes the suite's ids from `CASE_SPECS`, and refuses
a case whose files disagree with the recomputation; the hashes only catch corruption early.
"""

from .check import CaseCheck, CheckReport, check_scores, compare, read_scores
from .files import (
    FORMAT_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    TRAJECTORY_ARRAYS,
    CaseFileError,
    ReferenceCase,
    export_cases,
    load_case,
    load_cases,
    read_manifest,
)
from .lds import GroupEffects, LDSResult, group_effects  # the function lds is refsam.lds (the module: .lds)
from .peers import PEER_FORMATS, export_bank, import_bank
from .suite import (
    ATOL,
    BATCHINGS,
    CASE_SPECS,
    MODELS,
    OUTPUT_METHODS,
    PENALTIES,
    RTOL_EXACT,
    RULES,
    TARGETS,
    CaseSpec,
    build_case,
    case_ids,
    make_run,
    select_specs,
)

__all__ = [
    "ATOL", "BATCHINGS", "CASE_SPECS", "FORMAT_NAME", "MANIFEST_NAME", "MODELS", "OUTPUT_METHODS",
    "PENALTIES", "RTOL_EXACT", "RULES", "SCHEMA_VERSION", "TARGETS", "TRAJECTORY_ARRAYS",
    "CaseCheck", "CaseFileError", "CaseSpec", "CheckReport", "ReferenceCase", "build_case", "case_ids",
    "check_scores", "compare", "export_cases", "load_case", "load_cases", "make_run", "read_manifest",
    "read_scores", "select_specs", "GroupEffects", "LDSResult", "PEER_FORMATS", "export_bank",
    "group_effects", "import_bank",
]
