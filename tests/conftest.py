"""Shared fixtures. Torch runs on one thread: under contention its default slows 20-60x."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import oblivio as ob

torch.set_num_threads(1)
# Two-thread BLAS competing for two shared cores slows small solves ~10x.
threadpool_limits(1)


@pytest.fixture(scope="session")
def digits_split():
    """Digits, rows scaled to unit norm (as the certified bounds need)."""
    return ob.datasets.load("digits", normalize="l2")


@pytest.fixture(scope="session")
def binary_data(digits_split):
    """Digits 3 vs 8, unit-norm rows: a small binary task (Guo et al.'s MNIST 3-vs-8 analogue)."""
    return ob.datasets.load("digits", normalize="l2", classes=[3, 8]).train


@pytest.fixture
def rng():
    return np.random.default_rng(0)
