"""Canary exposure against a brute-force rank on a tiny model with known probabilities."""

import itertools
import math

import numpy as np
import pytest

from oblivio.audit.exposure import exposure_exact, exposure_skewnormal, log_perplexity


class Bigram:
    """P(next | last token of the window) from a fixed table: a model with known answers."""

    def __init__(self, table):
        self.table = np.asarray(table)

    def predict_proba(self, windows):
        return self.table[np.asarray(windows)[:, -1]]


@pytest.fixture
def bigram():
    rng = np.random.default_rng(3)
    table = rng.dirichlet(np.ones(5) * 0.7, size=5)
    return Bigram(table)


def brute_force(model, prefix, secret, alphabet):
    def bits(sequence):
        context = list(prefix)
        total = 0.0
        for token in sequence:
            total -= math.log2(model.table[context[-1], token])
            context.append(token)
        return total

    own = bits(secret)
    scores = [bits(c) for c in itertools.product(alphabet, repeat=len(secret))]
    rank = 1 + sum(score < own - 1e-9 for score in scores)
    return len(secret) * math.log2(len(alphabet)) - math.log2(rank), own, rank


def test_teacher_forced_log_perplexity(bigram):
    prefix, secret = [4, 2], [1, 3, 0]
    expected = -(
        math.log2(bigram.table[2, 1])
        + math.log2(bigram.table[1, 3])
        + math.log2(bigram.table[3, 0])
    )
    got = log_perplexity(bigram, prefix, np.array([secret]), window=3)
    assert got[0] == pytest.approx(expected)


@pytest.mark.parametrize("secret", [[0, 1, 2, 3], [3, 3, 1, 0], [2, 0, 2, 1]])
def test_exact_exposure_matches_brute_force(bigram, secret):
    alphabet = [0, 1, 2, 3]
    expected, own, rank = brute_force(bigram, [4], secret, alphabet)
    result = exposure_exact(bigram, [4], secret, alphabet, window=2)
    assert result.rank == rank
    assert result.exposure == pytest.approx(expected)
    assert result.log_perplexity == pytest.approx(own)
    assert result.space_bits == pytest.approx(8.0)


def test_skew_normal_approximates_the_exact_exposure(bigram):
    alphabet = [0, 1, 2, 3, 4]
    secrets = [[0, 1, 2, 3, 4, 0], [4, 4, 2, 1, 0, 3]]
    for secret in secrets:
        exact = exposure_exact(bigram, [1], secret, alphabet, window=2)
        approx = exposure_skewnormal(bigram, [1], secret, alphabet, window=2, n_samples=5000)
        assert abs(approx.exposure - exact.exposure) < 1.0
        # Reusing the fit gives the same number without sampling.
        again = exposure_skewnormal(bigram, [1], secret, alphabet, window=2, fit=approx.fit)
        assert again.exposure == pytest.approx(approx.exposure)


def test_bad_input(bigram):
    with pytest.raises(ValueError, match="too many to enumerate"):
        exposure_exact(bigram, [0], [0] * 10, list(range(10)), window=2)
    with pytest.raises(ValueError, match="outside the alphabet"):
        exposure_exact(bigram, [0], [4, 0], [0, 1], window=2)
    with pytest.raises(ValueError, match="n_samples"):
        exposure_skewnormal(bigram, [0], [1, 0], [0, 1], window=2, n_samples=5)
