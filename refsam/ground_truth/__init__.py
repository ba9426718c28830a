"""Ground truth: counterfactual replays of a recorded run (`replay`) and re-solved roots
(`resolve`) — finite differences in w_j and leave-one-out, independent of the methods they check —
and banks of random-subset counterfactuals (`bank`)."""

from .bank import CounterfactualBank, counterfactual_bank, load_bank, merge_bank_shards
from .replay import finite_difference_replay, leave_one_out_replay
from .resolve import finite_difference_influence, finite_difference_parameters, leave_one_out

__all__ = [
    "CounterfactualBank",
    "counterfactual_bank",
    "load_bank",
    "merge_bank_shards",
    "finite_difference_influence",
    "finite_difference_parameters",
    "finite_difference_replay",
    "leave_one_out",
    "leave_one_out_replay",
]
