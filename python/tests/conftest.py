"""Shared fixtures of the simdr Python tests: a fresh store path and an open store."""
import os

import pytest

import simdr


@pytest.fixture
def store_path(tmp_path):
    return os.path.join(tmp_path, "store.bin")


@pytest.fixture
def db(store_path):
    store = simdr.open(store_path)
    yield store
    store.close()


def scale():
    """SIMDR_TEST_SCALE shrinks (0.x) or grows the bigger tests, as in the C suites."""
    try:
        return max(0.05, float(os.environ.get("SIMDR_TEST_SCALE", "1")))
    except ValueError:
        return 1.0
