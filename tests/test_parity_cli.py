"""`sa3 parity` on the public vectors, exactly as a user runs it (a subprocess, exit code, printed lines)."""

import re
import subprocess
import sys

import pytest
from conftest import PARITY_DIR

CASES = sorted(p.parent.name for p in PARITY_DIR.glob("*/case.json")) if PARITY_DIR.is_dir() else []


def run_parity(*paths):
    return subprocess.run(
        [sys.executable, "-m", "sa3_engine.cli.main", "parity", *map(str, paths)], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("case", CASES)
def test_public_case_passes_strictly(case):
    result = run_parity(PARITY_DIR / case)
    last = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout + result.stderr
    passed, failed = map(int, re.fullmatch(r"(\d+) passed, (\d+) failed", last).groups())
    assert passed > 0 and failed == 0


def test_unknown_case_is_a_failure(tmp_path):
    case = tmp_path / "99_something_new"
    case.mkdir()
    (case / "case.json").write_text('{"component": "a component we have never heard of"}')
    (case / "config.json").write_text("{}")
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(case / "inputs.safetensors"))
    save_file({"y": torch.zeros(1)}, str(case / "outputs.safetensors"))
    result = run_parity(case)
    assert result.returncode == 1
    assert "FAIL" in result.stdout and result.stdout.strip().endswith("0 passed, 1 failed")


def test_missing_folder_is_an_error(tmp_path):
    result = run_parity(tmp_path / "nope")
    assert result.returncode == 1 and "no parity case" in result.stderr
