"""The one table of influence methods: the names used by the API, the CLI, the reference cases and the docs.

Every method estimates the same quantity, I_j(f) = ∂ f(θ_final(w)) / ∂ w_j at w = 1 (removing j changes
f by about −I_j(f)). A method has one canonical name (lower case, underscores), which is also its output
name in the reference cases; the API call it stands for; whether it is exact for its target; and the
0.1 spellings still accepted (`method_info()` resolves any of them).

====================  ===========  ======================================  =====  ==========================
name                  target       call                                    exact  also accepted
====================  ===========  ======================================  =====  ==========================
closed_form           SAM root θ̂   hessian_influence(variant="full")       yes    sam-full, full
closed_form_frozen    SAM root θ̂   hessian_influence(variant="frozen")     no     sam-frozen, frozen
closed_form_erm       SAM root θ̂   hessian_influence(variant="erm")        no     erm
trajectory            the run      trajectory_influence(method="adjoint")  yes    adjoint
trajectory_forward    the run      trajectory_influence(method="forward")  yes    forward
trajectory_autodiff   the run      trajectory_influence(method="autodiff") yes    autodiff
first_order           the run      trajectory_influence(method=…)          no     first-order
first_order_unperturbed  the run   trajectory_influence(method=…)          no     first-order-unperturbed
tracin                the run      trajectory_influence(method=…)          no
tracin_unperturbed    the run      trajectory_influence(method=…)          no     tracin-unperturbed
====================  ===========  ======================================  =====  ==========================

The table is `METHOD_TABLE`; everything else here is derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError

__all__ = [
    "APPLICATION_METHODS",
    "CLOSED_FORM",
    "CLOSED_FORM_VARIANTS",
    "METHOD_TABLE",
    "TRAJECTORY",
    "TRAJECTORY_APPROXIMATIONS",
    "TRAJECTORY_EXACT",
    "TRAJECTORY_METHODS",
    "MethodInfo",
    "method_info",
    "methods_of",
]

CLOSED_FORM = "closed_form"  # family: the implicit-function theorem at a root of G
TRAJECTORY = "trajectory"  # family: the derivative of (an approximation to) the recorded run


@dataclass(frozen=True)
class MethodInfo:
    """One row of the method table."""

    name: str  # canonical: API, CLI, reference-case output name, docs
    family: str  # CLOSED_FORM or TRAJECTORY
    call: str  # hessian_influence's `variant` or trajectory_influence's `method`
    exact: bool  # exact derivative of its target (the root or the run)
    summary: str  # one line for tables and --help
    aliases: tuple[str, ...] = ()  # 0.1 spellings, still accepted


METHOD_TABLE: tuple[MethodInfo, ...] = (
    MethodInfo("closed_form", CLOSED_FORM, "full", True,
               "closed form at the SAM root (implicit function theorem, exact at a verified root)",
               ("sam-full", "full")),
    MethodInfo("closed_form_frozen", CLOSED_FORM, "frozen", False,
               "Koh-Liang at the perturbed point with the perturbation frozen (ablation)",
               ("sam-frozen", "frozen")),
    MethodInfo("closed_form_erm", CLOSED_FORM, "erm", False,
               "Koh-Liang at the root, SAM ignored (ablation)", ("erm",)),
    MethodInfo("trajectory", TRAJECTORY, "adjoint", True,
               "exact derivative of the recorded run (adjoint recursion)", ("adjoint",)),
    MethodInfo("trajectory_forward", TRAJECTORY, "forward", True,
               "exact derivative of the recorded run (forward tangents; a cross-check)", ("forward",)),
    MethodInfo("trajectory_autodiff", TRAJECTORY, "autodiff", True,
               "exact derivative of the recorded run (autograd through a re-run; the oracle)",
               ("autodiff",)),
    MethodInfo("first_order", TRAJECTORY, "first_order", False,
               "step Jacobians dropped, test gradient at the end of the run", ("first-order",)),
    MethodInfo("first_order_unperturbed", TRAJECTORY, "first_order_unperturbed", False,
               "first_order with training gradients at θ_t instead of ŵ_t", ("first-order-unperturbed",)),
    MethodInfo("tracin", TRAJECTORY, "tracin", False,
               "TracIn: test gradient at the same checkpoint as the training gradient"),
    MethodInfo("tracin_unperturbed", TRAJECTORY, "tracin_unperturbed", False,
               "tracin with both gradients at θ_t instead of ŵ_t", ("tracin-unperturbed",)),
)

_BY_NAME = {spelling: info for info in METHOD_TABLE for spelling in (info.name, *info.aliases)}


def method_info(name: object, allowed: tuple[str, ...] | None = None, argument: str = "method") -> MethodInfo:
    """The table row for ``name`` (canonical, or an accepted spelling; hyphens read as underscores).

    ``allowed`` restricts the answer to these canonical names; the error lists them.
    """
    info = None
    if isinstance(name, str):
        info = _BY_NAME.get(name) or _BY_NAME.get(name.replace("-", "_"))
    choices = [i.name for i in METHOD_TABLE] if allowed is None else list(allowed)
    if info is None or info.name not in choices:
        raise InvalidInputError(f"`{argument}` must be one of {choices}, got {name!r}")
    return info


def methods_of(family: str, exact: bool | None = None) -> tuple[str, ...]:
    """Canonical names of one family (optionally only the exact or only the approximate ones)."""
    return tuple(i.name for i in METHOD_TABLE if i.family == family and (exact is None or i.exact == exact))


CLOSED_FORM_VARIANTS = tuple(i.call for i in METHOD_TABLE if i.family == CLOSED_FORM)  # full, frozen, erm
TRAJECTORY_EXACT = tuple(i.call for i in METHOD_TABLE if i.family == TRAJECTORY and i.exact)
TRAJECTORY_APPROXIMATIONS = tuple(i.call for i in METHOD_TABLE if i.family == TRAJECTORY and not i.exact)
TRAJECTORY_METHODS = TRAJECTORY_EXACT + TRAJECTORY_APPROXIMATIONS  # trajectory_influence's `method`
# What the applications run on a fitted model (the exact cross-checks of the run are for tests):
APPLICATION_METHODS = tuple(i.name for i in METHOD_TABLE
                            if i.name not in ("trajectory_forward", "trajectory_autodiff"))
