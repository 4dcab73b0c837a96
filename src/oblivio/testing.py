"""Public test utilities: the contract every unlearner passes, and the retraining oracle.

Like scikit-learn's ``check_estimator``: one call runs the generic properties on any
method, so users can check a method (or their own) on their own data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from oblivio.data import Dataset, Relabel, Remove, RequestError
from oblivio.models.base import Model
from oblivio.unlearners.base import Unlearner, UnlearnResult

__all__ = ["check_unlearner", "retrain_oracle"]


def retrain_oracle(model: Model, data: Dataset) -> Model:
    """A fresh clone of ``model`` trained on ``data``: what exact unlearning must match."""
    return model.clone().fit(data)


def _state(unlearner: Unlearner) -> tuple[torch.Tensor, np.ndarray, int]:
    return (
        unlearner.model_.theta.detach().clone(),
        unlearner.train_.ids.copy(),
        len(unlearner.history_),
    )


def _assert_unchanged(unlearner: Unlearner, before: tuple, what: str) -> None:
    theta, ids, n_history = before
    if not torch.equal(unlearner.model_.theta, theta):
        raise AssertionError(f"{what} changed the model parameters")
    if not np.array_equal(unlearner.train_.ids, ids):
        raise AssertionError(f"{what} changed train_")
    if len(unlearner.history_) != n_history:
        raise AssertionError(f"{what} was recorded in history_")


def _check_result(unlearner: Unlearner, result: UnlearnResult, n_affected: int) -> None:
    if not isinstance(result, UnlearnResult):
        raise AssertionError(f"forget() returned {type(result).__name__}, not UnlearnResult")
    if result.method != unlearner.name:
        raise AssertionError(f"result.method={result.method!r}, expected {unlearner.name!r}")
    if result.n_affected != n_affected:
        raise AssertionError(f"result.n_affected={result.n_affected}, expected {n_affected}")
    if not (np.isfinite(result.seconds) and result.seconds >= 0):
        raise AssertionError(f"result.seconds={result.seconds} is not a duration")
    if unlearner.history_[-1] is not result:
        raise AssertionError("the result was not appended to history_")
    if not all(isinstance(v, float) for v in result.diagnostics.values()):
        raise AssertionError("diagnostics must map names to floats")


def check_unlearner(
    factory: Callable[[], Unlearner],
    train: Dataset,
    *,
    n_forget: int = 3,
    seed: int = 0,
    atol: float = 1e-8,
) -> None:
    """Run the generic unlearner contract; raise ``AssertionError`` on the first violation.

    Checks, on ``train``:

    1. bad requests (unknown ids, duplicate ids, labels outside the classes, removing every
       record) raise :class:`~oblivio.RequestError` and change nothing;
    2. an empty-effect request (no ids) leaves the parameters exactly unchanged;
    3. results have their fields filled, ``train_`` loses the removed ids, and history grows;
    4. two unlearners from ``factory`` given the same requests end with the same parameters
       (repeatability with a seed);
    5. for exact methods: removing A then B gives the parameters of removing A ∪ B at once,
       and both equal the same method fitted from scratch on the remaining records (which
       must differ from the original model, or the check would prove nothing).

    Parameters
    ----------
    factory : callable
        Returns a new, unfitted unlearner (with a fixed seed, if it has one).
    train : Dataset
        Training data (a few hundred records keep this fast).
    n_forget : int
        Size of each removal request.
    """
    rng = np.random.default_rng(seed)
    chosen = rng.choice(train.ids, size=2 * n_forget, replace=False)
    first, second = chosen[:n_forget], chosen[n_forget:]
    unknown_id = int(train.ids.max()) + 1

    unlearner = factory().fit(train)
    original_theta = unlearner.model_.theta.detach().clone()
    bad_requests = {
        "unknown ids": Remove(ids=[int(first[0]), unknown_id]),
        "duplicate ids": Remove(ids=[int(first[0]), int(first[0])]),
        "removing every record": Remove(ids=train.ids),
        "labels outside the classes": Relabel(ids=first[:1], labels=[len(train.classes)]),
    }
    for what, request in bad_requests.items():
        before = _state(unlearner)
        try:
            unlearner.forget(request)
        except RequestError:
            pass
        else:
            raise AssertionError(f"a request with {what} was accepted")
        _assert_unchanged(unlearner, before, f"a rejected request ({what})")

    theta_before = unlearner.model_.theta.detach().clone()
    result = unlearner.forget(Remove(ids=[]))
    _check_result(unlearner, result, 0)
    if not torch.equal(unlearner.model_.theta, theta_before):
        raise AssertionError("an empty request changed the parameters")

    result = unlearner.forget(Remove(ids=first))
    _check_result(unlearner, result, n_forget)
    if result.exact != unlearner.exact and unlearner.exact:
        raise AssertionError("an exact method reported an inexact result")
    if np.isin(first, unlearner.train_.ids).any():
        raise AssertionError("removed ids are still in train_")
    if len(unlearner.train_) != len(train) - n_forget:
        raise AssertionError("train_ has the wrong size after a removal")
    result = unlearner.forget(Remove(ids=second))
    _check_result(unlearner, result, n_forget)

    twin = factory().fit(train)
    twin.forget(Remove(ids=first))
    twin.forget(Remove(ids=second))
    if not torch.allclose(twin.model_.theta, unlearner.model_.theta, atol=atol, rtol=0):
        raise AssertionError("two runs with the same seed and requests differ")

    if unlearner.exact:
        at_once = factory().fit(train)
        at_once.forget(Remove(ids=chosen))
        gap = float(torch.linalg.vector_norm(at_once.model_.theta - unlearner.model_.theta))
        scale = max(1.0, float(torch.linalg.vector_norm(at_once.model_.theta)))
        if gap > atol * scale:
            raise AssertionError(f"exact method: A then B differs from A ∪ B by {gap:.3g}")
        scratch = factory().fit(train.drop(chosen))
        gap = float(torch.linalg.vector_norm(scratch.model_.theta - unlearner.model_.theta))
        if gap > atol * scale:
            raise AssertionError(
                f"exact method differs by {gap:.3g} from a fit from scratch on the remaining data"
            )
        moved = float(torch.linalg.vector_norm(scratch.model_.theta - original_theta))
        if moved <= 10 * atol * scale:
            raise AssertionError(
                "vacuous check: removing the records did not change the retrained model; "
                "use more informative data or a larger n_forget"
            )
