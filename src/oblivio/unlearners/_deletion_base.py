"""The base of the neural deletion methods: their options, batches and one request.

:class:`_Deletion` holds what ``scrub``, ``neggrad-plus``, ``l1-sparse``
(:mod:`oblivio.unlearners.deletion`), ``salun`` (:mod:`oblivio.unlearners.salun`) and
``margin-match``
(:mod:`oblivio.unlearners.margin_match`) share: the budget and batch options, the check that
a request removes records, the forget and retained streams of a request and the hand-over
to the shared deletion loop (:mod:`oblivio.unlearners._landing`). Each method writes
``_losses``: the loss of one step, what runs after it, and the repair phase's loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from oblivio.data import Change, RequestError
from oblivio.models.base import Model
from oblivio.unlearners._loop import _NeuralUnlearner
from oblivio.unlearners._neural import (
    _seed_generators,
    _Stream,
    check_budget,
    logit_margins,
    of_kept_classes,
    set_train_mode,
)
from oblivio.unlearners.base import Outcome, check_count

__all__: list[str] = []

#: Retained records whose margins rank the hard ones (a random pool, to bound the cost).
_POOL = 20_000
#: The hardest share of the pool that hard retained batches are drawn from.
_HARD = 0.1


def _check_fraction(name: str, value: Any, *, closed: bool = False) -> None:
    ok = isinstance(value, (int, float)) and (0 <= value <= 1 if closed else 0 < value <= 1)
    if not ok:
        interval = "[0, 1]" if closed else "(0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")


def _adam_lr(unlearner: _NeuralUnlearner) -> float:
    """Adam's default learning rate for a one-phase deletion run: 0.75 x the original
    training's (a :class:`~oblivio.models.TorchModel` trained with Adam; 1e-3 otherwise),
    the scale at which that network learnt its records (``margin-match``: on a 4k CNN
    trained at 2e-3, 1e-3 gave avg gap 4.1, 1.5e-3 3.9 and 2e-3 did not land)."""
    model = getattr(unlearner, "model_", None) or unlearner.model
    trained_lr = getattr(model, "lr", None)
    if getattr(model, "optimizer", None) == "adam" and isinstance(trained_lr, (int, float)):
        return 0.75 * float(trained_lr)
    return 1e-3


class _Deletion(_NeuralUnlearner):
    """Options and batches shared by the deletion methods; subclasses write ``_losses``."""

    needs = frozenset({"forget", "retain"})
    goals: ClassVar[tuple[str, ...]] = ("deletion",)
    #: Records of each kind one step reads: ("forget", "retain") or a subset.
    _reads: ClassVar[tuple[str, ...]] = ("forget", "retain")

    def __init__(
        self,
        model: Model,
        *,
        budget: float,
        lr: float,
        batch_size: int,
        forget_batch_size: int,
        momentum: float,
        weight_decay: float,
        bn_mode: str,
        seed: int,
        on_failure: str,
    ) -> None:
        super().__init__(
            model,
            on_failure=on_failure,
            lr=lr,
            batch_size=batch_size,
            momentum=momentum,
            weight_decay=weight_decay,
            bn_mode=bn_mode,
            seed=seed,
        )
        self.budget = budget
        self.forget_batch_size = forget_batch_size

    def _check_params(self) -> None:
        super()._check_params()
        check_budget(self.budget)
        if "forget" in self._reads:
            check_count("forget_batch_size", self.forget_batch_size)

    def _validate_change(self, change: Change) -> None:
        if not (change.is_removal or change.is_empty):
            raise RequestError(
                f"{self.name} deletes records: it supports Remove requests, not "
                f"{type(change.request).__name__}; use 'finetune' or 'retrain'"
            )

    def _records_per_step(self, n_forget: int, n_retain: int) -> int:
        """Records one optimiser step reads, on average."""
        return self.forget_batch_size * ("forget" in self._reads) + self.batch_size * (
            "retain" in self._reads
        )

    def _forget(self, change: Change) -> Outcome:
        _, generator = _seed_generators(self.seed, self._request_index())
        retain = change.result
        forget_stream = _Stream(
            self._inputs(change.before),
            self._labels(change.before.y),
            self.forget_batch_size,
            generator,
        )
        retain_stream = _Stream(
            self._inputs(retain), self._labels(retain.y), self.batch_size, generator
        )
        diagnostics: dict[str, float] = {}
        loss_of_step, after_step, repair = self._losses(
            change, forget_stream, retain_stream, generator, diagnostics
        )
        if repair is None:
            repair = self._cross_entropy_on(retain_stream)  # retained batches of batch_size
        per_step = self._records_per_step(len(change.before), len(retain))
        diagnostics.update(
            self._run_deletion(
                change,
                loss_of_step,
                budget=self.budget,
                records_per_step=per_step,
                after_step=after_step,
                repair=repair,
                repair_records=self.batch_size,
            )
        )
        return Outcome(diagnostics=diagnostics)

    def _losses(
        self,
        change: Change,
        forget: _Stream,
        retain: _Stream,
        generator: torch.Generator,
        diagnostics: dict[str, float],
    ) -> tuple[Any, Any, Any]:
        """``(loss_of_step, after_step or None, repair)`` for this request; ``repair`` is
        the repair phase's loss, None for the default (cross-entropy on retained batches) or
        False for none."""
        raise NotImplementedError

    def _adam(self, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        """Adam on the trainable parameters at ``_lr()`` (the one-phase runs' optimiser),
        with the roll-back point reset as for SGD."""
        super()._optimizer()
        params = [p for p in self._module.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self._lr(), weight_decay=weight_decay)

    def _left_without_reference(self, change: Change, who: str = "") -> Outcome | None:
        """For a method that needs a reference set for records of classes that keep training
        records: when the request has such records and none is attached, the outcome of
        leaving the model as it is (with ``_judge``'s warning); None otherwise."""
        present = of_kept_classes(change.before.y, change)
        if not present.any() or self._present_holdout(change) is not None:
            return None
        diagnostics = {"target_known": 0.0, "steps": 0.0, "repair_steps": 0.0}
        self._judge(
            diagnostics,
            False,
            f"{who}needs a held-out reference set for the {int(present.sum())} forget "
            "records whose class keeps training records (attach(train, holdout=...)); the "
            "model was left as it is",
        )
        return Outcome(diagnostics=diagnostics)

    def _hard_retained(
        self, retain: _Stream, generator: torch.Generator, hard_share: float
    ) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        """Retained batches of ``batch_size`` records, ``hard_share`` of each drawn from the
        10 % of retained records with the smallest margins (in a seeded pool of at most
        20,000), the rest uniformly: a push on hard forget records drags those along, and
        holding them keeps the retained accuracy (``margin-match``, module docstring)."""
        module = self._module
        pool = torch.randperm(len(retain), generator=generator)[:_POOL].to(retain.X.device)
        pool_margins = logit_margins(module, retain.X[pool], retain.y[pool])
        hard = pool[pool_margins.argsort()[: max(1, int(_HARD * pool.numel()))]]
        n_hard = int(round(hard_share * self.batch_size))
        streams = [
            _Stream(X, y, size, generator)
            for X, y, size in (
                (retain.X[hard], retain.y[hard], n_hard),
                (retain.X, retain.y, self.batch_size - n_hard),
            )
            if size
        ]

        def batch() -> tuple[torch.Tensor, torch.Tensor]:
            drawn = [stream.next() for stream in streams]
            return torch.cat([X for X, _, _ in drawn]), torch.cat([y for _, y, _ in drawn])

        return batch

    def _train_mode(self, n: int) -> None:
        set_train_mode(self._module, self.bn_mode, n)
