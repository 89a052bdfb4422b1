import os
from pathlib import Path

import pytest
import torch

# Two cores are shared by the whole suite; more threads only add contention.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PARITY_DIR = Path(__file__).resolve().parents[2] / "shared" / "parity"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY_DIR.is_dir():
        pytest.skip(f"official parity vectors not found at {PARITY_DIR}")
    return PARITY_DIR
