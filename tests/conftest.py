"""Fixtures shared by every test package."""

import os
from pathlib import Path

import pytest

# Session fixtures on real MNIST that tests of several packages share (detectors, attacks, lab).
pytest_plugins = ("tests.helpers.tiny_mnist", "tests.helpers.mnist_lenet")

# The shared data sets sit beside the checkout in development and CI; users may point elsewhere.
SHARED_DATA = Path(
    os.environ.get("GGA_TEST_DATA_DIR", Path(__file__).parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real data sets (``../shared/data``); tests needing them skip with a reason if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA} (set GGA_TEST_DATA_DIR)")
    return SHARED_DATA
