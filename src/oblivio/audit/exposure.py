"""Canary exposure of a character model (Carlini et al., *The Secret Sharer*, USENIX Sec. 2019).

A canary is a prefix followed by a secret of L characters from an alphabet A (e.g. a
telephone number, A = digits). With R = A^L the set of all possible secrets,

    exposure(secret) = log2 |R| − log2 rank(secret),

where ``rank`` is the 1-based position of the secret among all candidates sorted by their
**teacher-forced** log-perplexity after the prefix (Carlini et al., Def. 4):

    logppl(c) = − Σ_{i=1..L} log2 P(c_i | prefix, c_1 .. c_{i−1}).

Teacher forcing conditions every step on the true earlier characters of the candidate (the
original code of Warnecke et al. conditions on the model's argmax instead, a listed bug we do
not reproduce). Two estimators:

* :func:`exposure_exact` enumerates R for small alphabets and lengths (exact rank);
* :func:`exposure_skewnormal` fits a skew-normal distribution to the log-perplexities of
  uniformly sampled candidates and reads the canary's tail probability,
  ``exposure ≈ −log2 F(logppl(canary))`` (Carlini et al., Sec. 4.2; the fit of the original
  model can be reused after unlearning, as Warnecke et al. do).

Models are anything with ``predict_proba(windows) -> (n, vocab)`` that predicts the next
token from integer windows of shape (n, window); :class:`oblivio.models.CharLSTM` inside a
``TorchModel`` is one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ExposureResult", "exposure_exact", "exposure_skewnormal", "log_perplexity"]

_MAX_EXACT_CANDIDATES = 2_000_000


def _windows(contexts: np.ndarray, window: int, pad: int) -> np.ndarray:
    if contexts.shape[1] >= window:
        return contexts[:, -window:]
    padding = np.full((contexts.shape[0], window - contexts.shape[1]), pad, dtype=contexts.dtype)
    return np.concatenate([padding, contexts], axis=1)


def log_perplexity(
    model: Any,
    prefix: Sequence[int],
    candidates: np.ndarray,
    *,
    window: int,
    pad: int = 0,
    batch_size: int = 4096,
) -> np.ndarray:
    """Teacher-forced log-perplexity (bits) of each candidate secret after ``prefix``.

    Parameters
    ----------
    model : object with ``predict_proba``
        Next-token model on integer windows of length ``window``.
    prefix : sequence of int
        Token ids of the canary prefix (e.g. "my telephone number is ").
    candidates : int array of shape (n, L)
        Secrets to score.
    window : int
        Context length the model reads; longer contexts are truncated on the left,
        shorter ones left-padded with ``pad``.
    """
    candidates = np.atleast_2d(np.asarray(candidates, dtype=np.int64))
    prefix = np.asarray(prefix, dtype=np.int64)
    n, length = candidates.shape
    total = np.zeros(n)
    for position in range(length):
        contexts = np.concatenate(
            [np.broadcast_to(prefix, (n, prefix.size)), candidates[:, :position]], axis=1
        )
        inputs = _windows(contexts, window, pad)
        for start in range(0, n, batch_size):
            block = slice(start, start + batch_size)
            probabilities = np.asarray(model.predict_proba(inputs[block]))
            picked = probabilities[np.arange(probabilities.shape[0]), candidates[block, position]]
            total[block] -= np.log2(np.clip(picked, 1e-300, 1.0))
    return total


@dataclass(frozen=True)
class ExposureResult:
    """Exposure of one canary.

    Attributes
    ----------
    exposure : float
        Bits; at most ``log2 |R|``.
    log_perplexity : float
        Teacher-forced log-perplexity of the secret (bits).
    rank : float
        Rank of the secret (exact, or ``|R| · F(logppl)`` for the approximation).
    space_bits : float
        ``log2 |R| = L · log2 |A|``.
    method : str
        ``"exact"`` or ``"skew-normal"``.
    fit : tuple of float or None
        Skew-normal (shape, location, scale) used, for reuse after unlearning.
    """

    exposure: float
    log_perplexity: float
    rank: float
    space_bits: float
    method: str
    fit: tuple[float, float, float] | None = None


def exposure_exact(
    model: Any,
    prefix: Sequence[int],
    secret: Sequence[int],
    alphabet: Sequence[int],
    *,
    window: int,
    pad: int = 0,
) -> ExposureResult:
    """Exact exposure by enumerating every candidate of ``len(secret)`` over ``alphabet``.

    Ties count against the secret (rank = 1 + number of candidates with a strictly smaller
    log-perplexity), as in Carlini et al.'s definition of rank.
    """
    secret = np.asarray(secret, dtype=np.int64)
    alphabet = np.asarray(alphabet, dtype=np.int64)
    size = float(alphabet.size) ** secret.size
    if size > _MAX_EXACT_CANDIDATES:
        raise ValueError(
            f"{alphabet.size}^{secret.size} = {size:.3g} candidates is too many to enumerate "
            f"(limit {_MAX_EXACT_CANDIDATES:,}); use exposure_skewnormal"
        )
    if not np.isin(secret, alphabet).all():
        raise ValueError(f"the secret {secret.tolist()} uses tokens outside the alphabet")
    candidates = np.array(list(itertools.product(alphabet, repeat=secret.size)), dtype=np.int64)
    scores = log_perplexity(model, prefix, candidates, window=window, pad=pad)
    own = float(log_perplexity(model, prefix, secret[None, :], window=window, pad=pad)[0])
    rank = 1 + int(np.sum(scores < own - 1e-9))
    bits = secret.size * math.log2(alphabet.size)
    return ExposureResult(bits - math.log2(rank), own, float(rank), bits, "exact")


def exposure_skewnormal(
    model: Any,
    prefix: Sequence[int],
    secret: Sequence[int],
    alphabet: Sequence[int],
    *,
    window: int,
    n_samples: int = 10_000,
    seed: int | None = 0,
    fit: tuple[float, float, float] | None = None,
    pad: int = 0,
) -> ExposureResult:
    """Exposure from a skew-normal fit to sampled candidates (Carlini et al., Sec. 4.2).

    Parameters
    ----------
    n_samples : int
        Candidates drawn uniformly from ``alphabet^L`` (with replacement).
    fit : (shape, loc, scale), optional
        Reuse a previous fit (e.g. of the original model) instead of refitting; the result
        says which fit was used.
    """
    from scipy.stats import skewnorm

    secret = np.asarray(secret, dtype=np.int64)
    alphabet = np.asarray(alphabet, dtype=np.int64)
    own = float(log_perplexity(model, prefix, secret[None, :], window=window, pad=pad)[0])
    if fit is None:
        if n_samples < 100:
            raise ValueError(f"n_samples must be at least 100 for a stable fit, got {n_samples}")
        rng = np.random.default_rng(seed)
        candidates = alphabet[rng.integers(0, alphabet.size, size=(n_samples, secret.size))]
        scores = log_perplexity(model, prefix, candidates, window=window, pad=pad)
        fit = tuple(float(v) for v in skewnorm.fit(scores))
    shape, location, scale = fit
    log_tail = skewnorm.logcdf(own, shape, loc=location, scale=scale) / math.log(2)
    bits = secret.size * math.log2(alphabet.size)
    exposure = float(min(-log_tail, bits))
    return ExposureResult(exposure, own, 2.0 ** (bits - exposure), bits, "skew-normal", fit)
