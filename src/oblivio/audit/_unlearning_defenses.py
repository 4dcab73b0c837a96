"""Defences against the unlearning attack (Chen et al., CCS 2021, Sec. 6).

Transformations of published posteriors (:func:`top_k`, :func:`label_only`,
:func:`temperature_scaling`), bundled as :class:`Defense`, and the training-time temperature
wrapper :class:`TemperatureScaled`. The public names are re-exported by
:mod:`oblivio.audit.unlearning_attack`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


# -- defences -------------------------------------------------------------------------------
def top_k(P: Any, k: int) -> np.ndarray:
    """Publish only each vector's top-``k`` confidences (Chen et al., Sec. 6).

    The other ``C - k`` entries of each row are each replaced by ``(1 - sum top-k) / (C - k)``,
    so rows still sum to 1. Ties are broken by class order. For ``k >= C`` nothing changes
    (e.g. top-1 on a binary task leaves the posterior as it is).
    """
    P = np.asarray(P, dtype=np.float64)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    n, C = P.shape
    if k >= C:
        return P.copy()
    order = np.argsort(-P, axis=1, kind="stable")
    keep = np.zeros_like(P, dtype=bool)
    np.put_along_axis(keep, order[:, :k], True, axis=1)
    rest = (1.0 - np.where(keep, P, 0.0).sum(axis=1, keepdims=True)) / (C - k)
    return np.where(keep, P, rest)


def label_only(P: Any) -> np.ndarray:
    """Publish only the predicted label: the one-hot vector of the argmax (Chen et al., Sec. 6).

    DirectDiff then lies in {0, +-1}^C and EucDist in {0, sqrt 2}: only prediction flips
    between M_o and M_u carry signal.
    """
    P = np.asarray(P, dtype=np.float64)
    out = np.zeros_like(P)
    out[np.arange(P.shape[0]), np.argmax(P, axis=1)] = 1.0
    return out


def temperature_scaling(P: Any, temperature: float) -> np.ndarray:
    """Soften posteriors: ``softmax(logits / T)`` computed as ``p^(1/T)`` renormalised.

    For a softmax model ``log p`` equals the logits up to a per-row constant, so this is the
    published output of the model with its logits divided by ``T`` at inference time (the
    reference's primary variant, unlearning-mia.md Sec. 8 [check the paper's protocol]).
    """
    P = np.asarray(P, dtype=np.float64)
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    with np.errstate(divide="ignore"):
        logits = np.log(P) / float(temperature)
    logits = logits - np.max(logits, axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


class TemperatureScaled(torch.nn.Module):
    """A network whose logits are divided by ``temperature`` in every forward pass.

    The training-time variant of temperature scaling (the original code's commented-out
    hooks sit inside the forward pass, so they act in training and at inference;
    unlearning-mia.md Sec. 8). Wrap a module before handing it to ``TorchModel``::

        TorchModel(TemperatureScaled(MLP(784, hidden=(128,), n_classes=10), 4.0), ...)

    Training then adapts the weights to the scaled logits (a network can learn to undo a
    constant scale), so this is weaker than scaling published posteriors only
    (:class:`Defense` ``"temperature:<T>"``); both are offered for comparison.
    """

    def __init__(self, module: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        if not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.module = module
        self.temperature = float(temperature)

    def forward(self, *inputs: Any) -> torch.Tensor:
        return self.module(*inputs) / self.temperature


@dataclass(frozen=True)
class Defense:
    """A defence applied to every published posterior (P_o and P_u, independently).

    Parameters
    ----------
    kind : {"none", "top_k", "label", "temperature"}
        The operation (:func:`top_k`, :func:`label_only`, :func:`temperature_scaling`).
    k : int, optional
        For ``top_k``.
    temperature : float, optional
        For ``temperature`` (T > 1 softens).

    ``Defense.parse("top2")``, ``"label"``, ``"temperature:4"`` (or ``"t4"``), ``"none"``.
    Temperature scaling here acts at inference time only; for the training-time variant wrap
    the network in :class:`TemperatureScaled`. DP-SGD (the reference's fourth defence) is a
    training method, not a posterior transformation, and is not offered here.
    """

    kind: str = "none"
    k: int | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("none", "top_k", "label", "temperature"):
            raise ValueError(
                f"defence kind must be 'none', 'top_k', 'label' or 'temperature', got {self.kind!r}"
            )
        if self.kind == "top_k" and (self.k is None or self.k < 1):
            raise ValueError(f"top_k needs k >= 1, got {self.k!r}")
        if self.kind == "temperature" and (self.temperature is None or self.temperature <= 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")

    @classmethod
    def parse(cls, spec: str | Defense | None) -> Defense:
        """From a short name: ``none``, ``top<k>``, ``label``, ``temperature:<T>``/``t<T>``."""
        if isinstance(spec, Defense):
            return spec
        if spec is None:
            return cls()
        text = str(spec).strip().lower().replace("-", "_")
        try:
            if text in ("none", ""):
                return cls()
            if text in ("label", "label_only"):
                return cls("label")
            if text.startswith("top_k"):
                return cls("top_k", k=int(text[5:].lstrip(":=")))
            if text.startswith("top"):
                return cls("top_k", k=int(text[3:].lstrip(":=")))
            if text.startswith("temperature"):
                return cls("temperature", temperature=float(text[11:].lstrip(":=")))
            if text.startswith("t") and text[1:]:
                return cls("temperature", temperature=float(text[1:].lstrip(":=")))
        except ValueError as error:
            raise ValueError(f"cannot parse defence {spec!r}: {error}") from None
        raise ValueError(f"unknown defence {spec!r}; use none, top<k>, label or temperature:<T>")

    @property
    def name(self) -> str:
        if self.kind == "top_k":
            return f"top{self.k}"
        if self.kind == "temperature":
            return f"temperature:{self.temperature:g}"
        return self.kind

    def apply(self, P: Any) -> np.ndarray:
        """The published version of posteriors ``P`` (n, C)."""
        P = np.asarray(P, dtype=np.float64)
        if self.kind == "top_k":
            return top_k(P, int(self.k))
        if self.kind == "label":
            return label_only(P)
        if self.kind == "temperature":
            return temperature_scaling(P, float(self.temperature))
        return P.copy()
