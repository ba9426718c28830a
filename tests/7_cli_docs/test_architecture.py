"""The structure the code promises: layers that import only downwards, no private name crossing a module
line, one idea per module, every 0.1 public name and module path still importable, no dispatch on
``type(model)``. Checked from the source with ``ast`` (CI also runs import-linter's contract)."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "refsam"

# Top to bottom; a module may import its own layer and the layers below it.
LAYERS = [
    {"cli"}, {"apps"}, {"kit"}, {"ground_truth"}, {"influence"}, {"training"}, {"objective", "sam"},
    {"models"}, {"data"}, {"validation", "tolerances", "version"},
]
SHIMS = {"applications", "cases", "closed_form", "counterfactual", "datasets", "demo", "fixed_point",
         "loaders", "plotting", "resolve", "testing", "trajectory_influence"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(name, path):
    """(imported module, imported names) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def _layer(module):
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "refsam":
        return None
    for rank, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return rank
    return None


def test_every_layer_imports_only_its_own_layer_and_the_layers_below():
    violations = []
    for name, path in _modules():
        own = _layer(name)
        if own is None:  # refsam/__init__ and the 0.1 re-export modules sit on top of everything
            continue
        for module, _ in _imports(name, path):
            target = _layer(module)
            if module.startswith("refsam") and module.split(".")[1:2] and module.split(".")[1] in SHIMS:
                violations.append(f"{name} imports the 0.1 re-export module {module}")
            elif target is not None and target < own:
                violations.append(f"{name} (layer {own}) imports {module} (layer {target}, above it)")
    assert not violations, "\n".join(violations)


def test_no_private_name_or_module_is_imported_across_modules():
    offenders = []
    files = list(_modules()) + [(f"benchmarks.{p.stem}", p) for p in (ROOT / "benchmarks").glob("*.py")]
    files += [(f"examples.{p.stem}", p) for p in (ROOT / "examples").glob("*.py")]
    for name, path in files:
        for module, names in _imports(name, path):
            if not module.startswith("refsam"):
                continue
            private = [n for n in names if n.startswith("_") and not n.endswith("__")]
            private_module = [p for p in module.split(".") if p.startswith("_")]
            if private or private_module:
                offenders.append(f"{name}: from {module} import {names}")
    assert not offenders, "\n".join(offenders)


def test_benchmarks_patch_nothing_inside_refsam():
    for path in (ROOT / "benchmarks").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "mock.patch" not in text and "monkeypatch" not in text, path.name


def test_every_module_states_its_idea_in_its_first_docstring_line():
    for name, path in _modules():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc and doc.splitlines()[0].strip(), f"{name} has no one-line summary docstring"


def test_no_dispatch_on_the_type_of_a_model():
    for name, path in _modules():
        text = path.read_text(encoding="utf-8")
        assert "type(model) is" not in text and "type(problem.model)" not in text, name


PUBLIC_0_1 = [
    "FixedPoint", "FixedPointError", "HyperparameterSensitivity", "NoFixedPointError", "UnverifiedRootError",
    "UnverifiedRootWarning", "fixed_point_diagnostics", "finite_difference_influence", "hessian_influence",
    "hyperparameter_sensitivity", "leave_one_out", "parameter_influence", "residual_jacobian", "residual_map",
    "residual_weight_jacobian", "self_influence", "solve_fixed_point", "MLP", "SAM", "LogisticRegression",
    "Model", "Problem", "SoftmaxRegression", "Trajectory", "ZeroGradientError",
    "make_gaussian_classification", "model_from_spec", "replay", "train", "trajectory_influence",
    "trajectory_parameter_influence",
    "finite_difference_replay", "leave_one_out_replay",
]
MODULES_0_1 = {  # module path documented in 0.1's API page -> names documented there
    "refsam.datasets": ["make_gaussian_classification"],
    "refsam.loaders": ["Dataset", "flip_labels", "train_test_split", "standardize", "check_labels_fit",
                       "load_csv", "load_npz", "sklearn_available", "load_dataset", "project_pca"],
    "refsam.models": ["Model", "LogisticRegression", "SoftmaxRegression", "MLP", "model_from_spec"],
    "refsam.objective": ["Problem"],
    "refsam.sam": ["ZeroGradientError", "SAM"],
    "refsam.training": ["sam_step", "Trajectory", "make_batches", "train", "replay"],
    "refsam.fixed_point": ["FixedPointError", "NoFixedPointError", "FixedPoint", "Linearisation",
                           "residual_map", "residual_jacobian", "residual_weight_jacobian",
                           "fixed_point_diagnostics", "no_root_reason", "solve_fixed_point"],
    "refsam.closed_form": ["UnverifiedRootError", "UnverifiedRootWarning", "HyperparameterSensitivity",
                           "hessian_influence", "parameter_influence", "self_influence",
                           "hyperparameter_sensitivity"],
    "refsam.resolve": ["finite_difference_parameters", "finite_difference_influence", "leave_one_out"],
    "refsam.trajectory_influence": ["trajectory_influence", "trajectory_parameter_influence", "METHODS",
                                    "EXACT_METHODS", "APPROXIMATE_METHODS"],
    "refsam.counterfactual": ["finite_difference_influence", "leave_one_out_replay"],
    "refsam.applications": ["Fit", "fit", "influence", "self_influence", "detection_scores",
                            "recall_at_fraction", "auroc", "detection_metrics", "detection_curve",
                            "DetectionResult", "detect_mislabeled", "mean_loss", "retrain_without",
                            "RemovalResult", "remove_harmful", "Explanation", "explain_prediction",
                            "Agreement", "GroundTruth", "choose_subset", "ground_truth", "compare_methods",
                            "METHODS", "CLOSED_FORM_METHODS", "TRAJECTORY_METHODS", "BASELINES"],
    "refsam.demo": ["DemoConfig", "DemoResult", "build_model", "prepare_data", "run_demo", "format_table",
                    "format_fixed_point", "format_report", "QUICK"],
    "refsam.plotting": ["matplotlib_available", "loo_scatter", "detection_curves", "removal_bars",
                        "explanation_2d", "demo_figures"],
    "refsam.cases": ["CaseFileError", "CaseSpec", "case_ids", "export_cases", "read_manifest", "load_case",
                     "load_cases", "ReferenceCase", "CaseCheck", "CheckReport", "read_scores", "compare",
                     "check_scores", "TARGETS", "CASE_SPECS", "RTOL_EXACT", "SCHEMA_VERSION"],
    "refsam.testing": ["problems", "sam_configs", "trajectories", "influence_problems", "suite_cases",
                       "rel_err", "assert_influence_close", "InfluenceProblem", "MODEL_KINDS"],
    "refsam.cli": ["main", "build_parser"],
}


def test_every_0_1_public_name_is_importable_from_refsam():
    refsam = importlib.import_module("refsam")
    missing = [n for n in PUBLIC_0_1 if not hasattr(refsam, n)]
    assert not missing


@pytest.mark.parametrize("module", sorted(MODULES_0_1))
def test_every_0_1_module_path_still_imports_with_its_names(module):
    mod = importlib.import_module(module)
    missing = [n for n in MODULES_0_1[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"


def test_the_0_1_attributes_and_keywords_are_kept():
    import inspect

    import refsam

    X, y, _ = refsam.make_gaussian_classification(n=20, n_features=2, seed=0)
    problem = refsam.Problem(refsam.LogisticRegression(), X, y, weight_decay=0.05)
    run = refsam.train(problem, refsam.SAM(0.05), lr=0.5, steps=5, batch_size=None, seed=0, theta0=None,
                       progress=False)
    for attr in ("thetas", "epsilons", "batches", "lrs", "weights", "config", "theta0", "theta_final",
                 "perturbed", "steps"):
        assert hasattr(run, attr), attr
    root = refsam.solve_fixed_point(problem, refsam.SAM(0.05), run.theta_final, lr=0.5, tol=1e-10,
                                    max_iter=100, method="auto", weights=None, raise_on_failure=True)
    for attr in ("theta", "residual", "converged", "iterations", "method", "tol", "jacobian",
                 "condition_number", "lr", "spectral_radius", "start_distance", "stable"):
        assert hasattr(root, attr), attr
    keywords = {
        refsam.hessian_influence: {"variant", "root_tol", "on_unverified"},
        refsam.trajectory_influence: {"method", "progress"},
        refsam.leave_one_out_replay: {"indices", "progress"},
        refsam.finite_difference_replay: {"indices", "h", "progress"},
        refsam.train: {"lr", "steps", "batch_size", "seed", "theta0", "progress"},
    }
    for fn, names in keywords.items():
        assert names <= set(inspect.signature(fn).parameters), fn.__name__


def test_importing_the_0_1_module_path_does_not_shadow_the_function_of_the_same_name():
    import refsam.trajectory_influence  # noqa: F401  (the 0.1 module path)

    import refsam

    assert callable(refsam.trajectory_influence)
