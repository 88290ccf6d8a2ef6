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


def pytest_terminal_summary(terminalreporter):
    """A skipped browser test is easy to miss in a line of dots: name it at the end of the run."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "browser" in getattr(r, "keywords", {})]
    if skipped:
        terminalreporter.section("BROWSER TESTS SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.line(f"{len(skipped)} browser tests did not run: {skipped[0].longrepr[-1]}", red=True)
