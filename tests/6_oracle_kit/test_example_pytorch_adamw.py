"""examples/validate_pytorch_adamw.py, run as a user runs it: a real torch.optim.AdamW + SAM run with
clip_grad_norm_ and CosineAnnealingLR is replayed by refsam to round-off, refsam's exact influence equals
autograd through the unrolled torch run, and two wrong ports are caught. Skipped without torch."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "validate_pytorch_adamw.py"


def test_a_real_torch_adamw_sam_run_is_replayed_and_its_influence_matches_autograd():
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    replay = float(lines[0].split("= ")[1].split()[0])
    assert replay <= 1e-12 and "clipped)" in lines[0] and not lines[0].endswith("(0 clipped)")
    assert "correct:" in lines[1] and lines[1].rstrip().endswith("PASS")
    assert all(line.rstrip().endswith("FAIL") for line in lines[2:4])
    assert lines[-1] == "all checks as expected"
