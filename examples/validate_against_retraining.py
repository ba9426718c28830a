"""Every influence method beside leave-one-out retraining, through the Python API.

    python examples/validate_against_retraining.py [--quick]

The programmatic version of `refsam demo`: train, verify the SAM fixed point, compute I_j(f) for
f = mean validation loss by each method, and compare with finite differences and leave-one-out
retraining on a subset of training points. Set REFSAM_EXAMPLE_QUICK=1 (or pass --quick) for a tiny run.
"""

import os
import sys

from refsam.apps.demo import QUICK as QUICK_SIZES
from refsam.apps.demo import DemoConfig, format_report, run_demo

QUICK = "--quick" in sys.argv or os.environ.get("REFSAM_EXAMPLE_QUICK") == "1"
config = DemoConfig(progress=False, **(QUICK_SIZES if QUICK else {}))
result = run_demo(config)
print(format_report(result))

for a in result.agreements:
    if a.method in ("closed_form", "trajectory"):  # the exact methods
        assert a.max_rel_err < 1e-5, f"{a.method} disagrees with finite differences: {a.max_rel_err:.1e}"
