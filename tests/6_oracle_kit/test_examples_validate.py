"""examples/validate_pytorch.py: an independent PyTorch port checked against the reference cases.

With torch installed the example must replay every recorded run with a real torch.optim.SGD-, Adam- or
AdamW-based SAM optimizer (momentum, Nesterov, the presets, clip_grad_norm_ and the schedule of the Adam
cases) to 1e-12 at every step, pass every case with its correct variant, and have every case of its
deliberately wrong variant (perturbation detached), every momentum case of its second wrong variant
(weight decay outside the momentum buffer) and every Adam/AdamW case of its third (no bias correction)
rejected by the checker.
Without torch (as in CI)
it must exit 0 with a "skipped" message — tested always, by hiding torch from the interpreter.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "validate_pytorch.py"

HIDE_TORCH = (
    "import runpy, sys; sys.modules['torch'] = None; sys.argv = [sys.argv[1]]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def test_example_skips_cleanly_without_torch():
    result = subprocess.run([sys.executable, "-c", HIDE_TORCH, str(EXAMPLE)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "skipped: torch not installed (pip install torch to run this example)"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_pytorch_port_passes_and_its_wrong_variant_is_rejected():
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("correct variant: 84/84 passed; wrong variant: 84/84 rejected; weight decay outside the "
            "buffer: 39/39 momentum cases with weight decay rejected; no bias correction: 6/6 Adam cases "
            "rejected"
            ) in result.stdout
    replay = float(result.stdout.split("every step of every case = ")[1].split()[0])
    assert replay <= 1e-12
    assert "84/84 cases passed (target: trajectory)" in result.stdout
    assert "0/84 cases passed (target: trajectory); 84 FAILED" in result.stdout
