"""Shared test setup: every test starts from the same seeds and runs offline."""

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

# tests/ mirrors atlas/; the shared writers, tiny models and synthetic stores live in tests/helpers/.
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # rendering-only environments
        pass
    yield
