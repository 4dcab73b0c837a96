"""The shared machinery of neural unlearning: module access, the optimiser step, goals, state.

Every neural unlearner derives from :class:`_NeuralUnlearner`: module access, seeded
randomness, one optimiser step with divergence roll-back, snapshot/restore, the held-out
reference set and its persistence, and, for the **deletion** goal, the one loop that the
methods of :mod:`oblivio.unlearners.deletion`, ``margin-match`` and the deletion modes of
``gradient-ascent`` and ``random-labels`` share (mixed in from
:mod:`oblivio.unlearners._landing`, whose docstring describes budget, phases and landing).
A method supplies only the loss of each optimiser step (and, for SalUn, a mask); the loop
owns the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from oblivio.data import Dataset
from oblivio.models.base import Model
from oblivio.unlearners._landing import _DeletionLoop
from oblivio.unlearners._neural import as_inputs, module_device, predict_labels
from oblivio.unlearners._persist import LoadError, StateError, dataset_arrays, dataset_from
from oblivio.unlearners.base import Unlearner, check_count

__all__: list[str] = []

_BN_MODES = ("train", "eval")


class _NeuralUnlearner(_DeletionLoop, Unlearner):
    """Shared machinery: module access, SGD with roll-back, seeded randomness, goals, the
    deletion loop, an optional held-out reference set, state.

    ``goals`` names what the method can aim for (``"deletion"``: be where retraining would
    be; ``"correction"``: stop predicting the original labels); ``goal`` is the one this
    instance aims for (the first of ``goals`` unless the class takes a ``goal`` option).
    Every method checks its own result (the deletion target, or every forget record at its
    goal for correction) and acts on its ``on_failure`` option when it missed: ``"warn"``
    (default: :class:`~oblivio.UnlearningWarning` and ``diagnostics["landed"] = 0``),
    ``"raise"`` (:class:`~oblivio.UnlearningError`, nothing changed) or ``"ignore"``.
    """

    exact = False
    goals: ClassVar[tuple[str, ...]] = ("deletion",)
    #: True for a loss that carries its own target per forget record and holds the
    #: retained records in every step (``margin-match`` sets it per request): the deletion
    #: loop then neither ends the steps when the forget accuracy reaches its target nor
    #: backtracks on transient damage short of a wreck; the landing rule alone picks the
    #: checkpoint.
    _self_balancing: ClassVar[bool] = False
    #: Gradients whose total norm exceeds this are scaled down to it before each step (None:
    #: no clipping; SCRUB's ascent needs it).
    _max_grad_norm: ClassVar[float | None] = None

    def __init__(
        self,
        model: Model,
        *,
        lr: float,
        batch_size: int,
        momentum: float,
        weight_decay: float,
        bn_mode: str,
        seed: int,
        max_epochs: int | None = None,
        on_failure: str = "warn",
    ) -> None:
        super().__init__(model)
        self.goal = self.goals[0]
        self.on_failure = on_failure
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.bn_mode = bn_mode
        self.seed = seed

    # -- checks ----------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not (isinstance(self._lr(), (int, float)) and self._lr() > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.max_epochs is not None:
            check_count("max_epochs", self.max_epochs)
        check_count("batch_size", self.batch_size)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.bn_mode not in _BN_MODES:
            raise ValueError(f"bn_mode must be one of {_BN_MODES}, got {self.bn_mode!r}")
        self._check_goal()
        self._check_on_failure(self.on_failure)

    def _prepare(self) -> None:
        module = getattr(self.model_, "module_", None)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"{type(self).__name__} unlearns neural networks: it needs a fitted TorchModel "
                f"(with a module_), got {type(self.model_).__name__}"
            )
        self.n_classes_ = len(self.train_.classes)
        self._prepare_holdout()

    @property
    def _module(self) -> nn.Module:
        return self.model_.module_

    def _inputs(self, data: Dataset) -> torch.Tensor:
        return as_inputs(data.X, self._module)

    def _labels(self, y: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.asarray(y), dtype=torch.long, device=module_device(self._module))

    def _request_index(self) -> int:
        """How many requests changed something so far: seeds this request's randomness.

        Empty requests (recorded in ``history_`` but a no-op) do not count, so the same
        sequence of effective requests gives the same model (``check_unlearner``).
        """
        return sum(1 for r in self.history_ if r.n_affected > 0)

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self._module.parameters() if p.requires_grad]
        self._last_good: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        return torch.optim.SGD(
            params, lr=self._lr(), momentum=self.momentum, weight_decay=self.weight_decay
        )

    def _lr(self) -> float:
        """The learning rate in use (methods with goal-dependent defaults override)."""
        return self.lr

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
        """One optimiser step on ``loss``; False (and no step) when the loss or a gradient is
        not finite (or so large that the gradient's norm overflows). Gradient ascent can
        diverge: the parameters then go back to where the previous step started, the last
        point whose loss and gradients were finite (the step from there can already overflow
        the outputs on other inputs).

        One host-device synchronisation per step (the finiteness of the loss and of all
        gradient norms, tested together): a test per tensor stalled a GPU once per parameter
        on these small, launch-bound networks.
        """
        optimizer.zero_grad(set_to_none=True)  # never accumulate across batches (pitfall 4)
        loss.backward()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        finite = torch.isfinite(loss.detach())
        if grads:
            norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
            finite = finite & torch.isfinite(norm.to(finite.device))
        if not bool(finite):
            optimizer.zero_grad(set_to_none=True)
            self._roll_back()
            return False
        if self._max_grad_norm is not None and grads:
            # clipping by the norm already at hand: no second synchronisation
            scale = torch.clamp(self._max_grad_norm / (norm + 1e-12), max=1.0)
            for g in grads:
                g.mul_(scale.to(g.device))
        with torch.no_grad():
            if self._last_good is None:
                self._last_good = (params, [p.detach().clone() for p in params])
            else:
                for saved, p in zip(self._last_good[1], params, strict=True):
                    saved.copy_(p)
        optimizer.step()
        return True

    def _roll_back(self) -> None:
        if self._last_good is not None:
            with torch.no_grad():
                for p, saved in zip(*self._last_good, strict=True):
                    p.copy_(saved)

    def _accuracy(self, X: torch.Tensor, y: torch.Tensor) -> float:
        if X.shape[0] == 0:
            return float("nan")
        return float((predict_labels(self._module, X) == y).float().mean())

    def _snapshot(self) -> Any:
        return self._module_state()

    def _restore(self, state: Any) -> None:
        self._module.load_state_dict(state)

    def _finish(self) -> None:
        """Leave the module in eval mode (how TorchModel predicts) without stale gradients."""
        self._module.eval()
        for p in self._module.parameters():
            p.grad = None

    # -- goals and the reference set -----------------------------------------------------
    def _check_goal(self) -> None:
        if self.goal not in self.goals:
            raise ValueError(
                f"goal must be one of {self.goals} for {type(self).__name__}, got {self.goal!r}"
            )

    def fit(self, train: Dataset, *, holdout: Dataset | None = None) -> _NeuralUnlearner:
        """Train ``model_`` on ``train``; ``holdout``: records never trained on (optional).

        The held-out records set the forget accuracy that deletion aims for (see the
        module docstring); they are kept (and saved) with the unlearner.
        """
        self._pending_holdout = self._check_holdout(holdout)
        return super().fit(train)

    def attach(self, train: Dataset, *, holdout: Dataset | None = None) -> _NeuralUnlearner:
        """Adopt a model trained on exactly ``train``; ``holdout`` as for :meth:`fit`."""
        self._pending_holdout = self._check_holdout(holdout)
        return super().attach(train)

    def _check_holdout(self, holdout: Dataset | None) -> Dataset | None:
        if holdout is None:
            return None
        if not isinstance(holdout, Dataset):
            raise TypeError(f"holdout must be a Dataset, got {type(holdout).__name__}")
        if len(holdout) == 0:
            raise ValueError("holdout is empty; pass None for no reference set")
        return holdout

    def _prepare_holdout(self) -> None:
        self.holdout_ = getattr(self, "_pending_holdout", None)
        self._pending_holdout = None
        holdout = self.holdout_
        if holdout is not None and holdout.X.shape[1:] != self.train_.X.shape[1:]:
            raise ValueError(
                f"holdout records have shape {holdout.X.shape[1:]}, the training records "
                f"{self.train_.X.shape[1:]}"
            )

    def _holdout_state(self) -> dict[str, np.ndarray]:
        if getattr(self, "holdout_", None) is None:
            return {}
        return dataset_arrays("holdout__", self.holdout_)

    def _set_holdout_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.holdout_ = None
        if "holdout__y" in arrays:
            try:
                self.holdout_ = dataset_from(
                    Path("holdout"), "holdout__", arrays, {"name": "holdout"}
                )
            except LoadError as error:
                raise StateError("holdout", str(error)) from None

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, self._holdout_state()

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n_classes_ = len(self.train_.classes)
        self._set_holdout_state(arrays)

    def _module_state(self) -> dict[str, torch.Tensor]:
        # every trainable parameter and buffer moves, not only theta: keep the whole state
        return {k: v.detach().clone() for k, v in self._module.state_dict().items()}
