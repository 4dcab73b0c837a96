"""The aggregate model of SISA: :class:`SISAEnsemble`, the shard models voting as one.

Predictions average (or vote over) the shard models; ``theta`` and the state concatenate
theirs. :class:`~oblivio.unlearners.sisa.SISA` builds it; importable from there too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from oblivio.models.base import Model, NotFittedError
from oblivio.unlearners._sisa_shards import _copy_state, _restore

__all__ = ["SISAEnsemble"]


class SISAEnsemble:
    """The aggregate of SISA's shard models, usable like any model.

    ``predict_proba`` is the mean of the shard models' class probabilities (the soft vote
    Chen et al., CCS 2021, use); ``predict`` is its argmax (``aggregation="mean"``) or the
    majority vote of the shard predictions (``"vote"``, Bourtoule et al., Sec. IV), ties
    broken by the mean probability. ``theta`` concatenates the shard parameter vectors in
    shard order (empty shards have no model and no parameters).

    Parameters
    ----------
    template : Model
        The model every shard model is a clone of.
    n_shards : int
        Number of shards.
    aggregation : {"mean", "vote"}
        How ``predict`` combines the shard models.
    models : list of Model or None, optional
        Fitted shard models (None for an empty shard).
    """

    def __init__(
        self,
        template: Model,
        n_shards: int,
        aggregation: str = "mean",
        models: Sequence[Model | None] | None = None,
    ) -> None:
        self.template = template
        self.n_shards = n_shards
        self.aggregation = aggregation
        self.models_: list[Model | None] | None = None if models is None else list(models)
        if self.models_ is not None and len(self.models_) != n_shards:
            raise ValueError(f"expected {n_shards} shard models, got {len(self.models_)}")

    # -- plumbing ----------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "n_shards": self.n_shards,
            "aggregation": self.aggregation,
        }

    def clone(self) -> SISAEnsemble:
        """An unfitted ensemble with the same template and options."""
        return SISAEnsemble(self.template, self.n_shards, self.aggregation)

    def __repr__(self) -> str:
        return (
            f"SISAEnsemble({self.template!r}, n_shards={self.n_shards}, "
            f"aggregation={self.aggregation!r})"
        )

    def _fitted(self) -> list[Model]:
        if self.models_ is None:
            raise NotFittedError("SISAEnsemble is not fitted; fit it through SISA.fit()")
        return [m for m in self.models_ if m is not None]

    # -- predictions -------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Mean of the shard models' class probabilities, shape (n, n_classes)."""
        probabilities = [np.asarray(m.predict_proba(X), dtype=np.float64) for m in self._fitted()]
        return np.mean(probabilities, axis=0)

    def predict(self, X: Any) -> np.ndarray:
        """Argmax of the mean probability, or the majority vote of the shards."""
        mean = self.predict_proba(X)
        if self.aggregation == "mean":
            return np.argmax(mean, axis=1)
        votes = np.zeros_like(mean)
        rows = np.arange(mean.shape[0])
        for model in self._fitted():
            votes[rows, np.asarray(model.predict(X), dtype=np.int64)] += 1.0
        return np.argmax(votes + 0.5 * mean, axis=1)  # mean < 1 only breaks ties

    # -- parameters --------------------------------------------------------------------
    @property
    def theta(self) -> torch.Tensor:
        """Shard parameter vectors concatenated in shard order (a copy)."""
        return torch.cat([m.theta.detach().reshape(-1).clone() for m in self._fitted()])

    @theta.setter
    def theta(self, value: Any) -> None:
        flat = torch.as_tensor(value).detach().reshape(-1)
        models = self._fitted()
        sizes = [int(m.theta.numel()) for m in models]
        if flat.numel() != sum(sizes):
            raise ValueError(f"theta must have {sum(sizes)} entries, got {flat.numel()}")
        for model, part in zip(models, torch.split(flat, sizes), strict=True):
            model.theta = part.clone()

    @property
    def shard_thetas(self) -> list[torch.Tensor | None]:
        """Each shard's parameter vector (None for empty shards)."""
        if self.models_ is None:
            raise NotFittedError("SISAEnsemble is not fitted; fit it through SISA.fit()")
        return [None if m is None else m.theta for m in self.models_]

    # -- persistence -------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Shard states as ``shard<k>__<key>`` arrays plus a JSON-able ``__meta__``."""
        if self.models_ is None:
            raise NotFittedError("SISAEnsemble is not fitted; fit it through SISA.fit()")
        state: dict[str, Any] = {}
        metas: list[Any] = []
        for k, model in enumerate(self.models_):
            if model is None:
                metas.append(None)
                continue
            shard_state = _copy_state(model.get_state())
            metas.append(shard_state.pop("__meta__", {}))
            state.update({f"shard{k}__{key}": value for key, value in shard_state.items()})
        state["__meta__"] = {"shards": metas, "aggregation": self.aggregation}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`get_state` (shard models are clones of ``template``)."""
        metas = state.get("__meta__", {}).get("shards")
        if metas is None or len(metas) != self.n_shards:
            raise ValueError(f"state does not describe {self.n_shards} shard models")
        models: list[Model | None] = []
        for k, meta in enumerate(metas):
            if meta is None:
                models.append(None)
                continue
            prefix = f"shard{k}__"
            shard_state = {
                key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)
            }
            shard_state["__meta__"] = meta
            models.append(_restore(self.template, shard_state))
        self.models_ = models
