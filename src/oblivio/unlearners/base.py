"""The unlearner base class, its result types and the registry."""

from __future__ import annotations

import copy
import inspect
import json
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from oblivio.data import Change, Dataset, Remove, Request, RequestError
from oblivio.models.base import Model, NotFittedError

__all__ = [
    "Certificate",
    "Outcome",
    "UnlearnResult",
    "Unlearner",
    "available",
    "create",
    "register",
]

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Certificate:
    """An (epsilon, delta) certified-removal guarantee (Guo et al., ICML 2020, Thm. 3).

    ``residual_bound`` is the accumulated bound on the gradient residual of the unlearned
    model; the guarantee holds while ``budget_used <= budget_total`` where
    ``budget_total = sigma * epsilon / c`` and ``c = sqrt(2 ln(1.5 / delta))``.
    """

    epsilon: float
    delta: float
    sigma: float
    residual_bound: float
    budget_used: float
    budget_total: float

    @property
    def valid(self) -> bool:
        return self.budget_used <= self.budget_total

    @property
    def budget_left(self) -> float:
        return max(self.budget_total - self.budget_used, 0.0)


@dataclass(frozen=True)
class UnlearnResult:
    """What one ``forget`` call did.

    Attributes
    ----------
    method : str
        Registry name of the unlearner.
    n_affected : int
        Number of records the request changed or removed.
    exact : bool
        True when the new model is exactly what retraining gives.
    seconds : float
        Wall time of the call, including any precomputation it performed.
    retrained : bool
        True when the call fell back to (or consisted of) retraining from scratch.
    certificate : Certificate or None
        The certified-removal guarantee, for certified methods.
    diagnostics : dict of str to float
        Method-specific measurements (e.g. ``gradient_residual``, ``cg_iterations``).
    request : str
        The kind of request (``"Remove"``, ``"Relabel"``, ...).
    """

    method: str
    n_affected: int
    exact: bool
    seconds: float
    retrained: bool = False
    certificate: Certificate | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    request: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> UnlearnResult:
        payload = dict(payload)
        if payload.get("certificate") is not None:
            payload["certificate"] = Certificate(**payload["certificate"])
        return cls(**payload)


@dataclass
class Outcome:
    """What a method's ``_forget`` reports back to the base class."""

    retrained: bool = False
    certificate: Certificate | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    exact: bool | None = None


_REGISTRY: dict[str, type[Unlearner]] = {}


def register(cls: type[Unlearner]) -> type[Unlearner]:
    """Class decorator adding an unlearner to the registry under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"an unlearner named {name!r} is already registered")
    _REGISTRY[name] = cls
    return cls


def available() -> list[str]:
    """Registry names of all unlearners."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Unlearner]:
    """The unlearner class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown unlearner {name!r}; available: {', '.join(available())}"
        ) from None


def create(name: str, model: Model, **options: Any) -> Unlearner:
    """Instantiate the unlearner registered as ``name`` around ``model``."""
    return get(name)(model, **options)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save value of type {type(value).__name__}: {value!r}")


def _dataset_arrays(prefix: str, data: Dataset) -> dict[str, np.ndarray]:
    arrays = {f"{prefix}y": np.asarray(data.y), f"{prefix}ids": np.asarray(data.ids)}
    if sp.issparse(data.X):
        arrays.update(
            {
                f"{prefix}X_data": data.X.data,
                f"{prefix}X_indices": data.X.indices,
                f"{prefix}X_indptr": data.X.indptr,
                f"{prefix}X_shape": np.asarray(data.X.shape),
            }
        )
    else:
        arrays[f"{prefix}X"] = np.asarray(data.X)
    return arrays


def _dataset_from(prefix: str, arrays: Any, meta: dict[str, Any]) -> Dataset:
    if f"{prefix}X" in arrays:
        X = arrays[f"{prefix}X"]
    else:
        X = sp.csr_matrix(
            (arrays[f"{prefix}X_data"], arrays[f"{prefix}X_indices"], arrays[f"{prefix}X_indptr"]),
            shape=tuple(arrays[f"{prefix}X_shape"]),
        )
    return Dataset(
        X=X,
        y=arrays[f"{prefix}y"],
        ids=arrays[f"{prefix}ids"],
        feature_names=meta.get("feature_names"),
        classes=meta.get("classes"),
        name=meta.get("name", "data"),
    )


def write_atomically(path: Path, write: Any) -> None:
    """Call ``write(tmpdir)`` then move the folder to ``path`` in one rename.

    A crash leaves either the old folder or the new one, never a half-written folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(staging)
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, retired / "old")
            os.replace(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class Unlearner(ABC):
    """Base class of all unlearning methods.

    Subclasses set ``name``, ``exact`` and ``needs`` and implement :meth:`_forget`;
    the base class's :meth:`forget` resolves and validates the request, times the call,
    updates ``model_`` and ``train_`` and records the result in ``history_``. A request that
    fails (validation or an error inside the method) leaves everything unchanged.

    Parameters
    ----------
    model : Model
        A model template. ``fit`` trains a copy; ``attach`` takes a copy of an already
        trained model (the object you pass is never modified).

    Attributes
    ----------
    model_ : Model
        The current (unlearned) model.
    prepare_seconds_ : float
        Time ``fit``/``attach`` spent precomputing for ``forget`` (not training).
    train_ : Dataset
        The current training set (after all requests so far).
    history_ : list of UnlearnResult
        One entry per ``forget`` call.
    """

    name: ClassVar[str]
    exact: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset({"forget"})
    #: True for methods that must train their own model (a noisy objective, an ensemble),
    #: so ``attach`` to a plainly trained model is not possible.
    requires_fit: ClassVar[bool] = False

    def __init__(self, model: Model) -> None:
        if not hasattr(model, "clone") and hasattr(model, "get_params"):
            raise TypeError(
                f"{type(model).__name__} is a scikit-learn estimator, not an oblivio model: "
                "adopt a fitted logistic regression (or a Pipeline ending in one) with "
                "ob.models.from_sklearn(estimator, n_samples=len(train)), or wrap any "
                "unfitted classifier as ob.models.SklearnModel(estimator) for 'retrain'/'sisa'"
            )
        self.model = model

    # -- hyper-parameters --------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor options (besides ``model``), read back from attributes."""
        signature = inspect.signature(type(self).__init__)
        return {
            name: getattr(self, name)
            for name in signature.parameters
            if name not in ("self", "model")
        }

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({self.model!r}{', ' if options else ''}{options})"

    # -- training ------------------------------------------------------------------------
    def fit(self, train: Dataset) -> Unlearner:
        """Train ``model_`` from scratch on ``train`` the way this method needs."""
        self._check_params()
        self.model_ = self.model.clone()
        self._fit(train)
        self.train_ = train
        self.history_: list[UnlearnResult] = []
        self._timed_prepare()
        return self

    def attach(self, train: Dataset) -> Unlearner:
        """Adopt an already-trained ``model`` (trained on exactly ``train``) and precompute."""
        self._check_params()
        try:
            self.model.theta  # noqa: B018 - raises when the model is not fitted
        except NotFittedError as error:
            raise NotFittedError(
                f"attach() needs a trained model; {type(self.model).__name__} is not fitted. "
                "Use fit(train) to train one."
            ) from error
        if self.requires_fit:
            raise ValueError(
                f"{type(self).__name__} trains its own model (see its docstring); use fit(train)"
            )
        if getattr(self.model, "l2", 0.0) is None:
            raise ValueError(
                "the model's l2 is None (adopted from scikit-learn without n_samples), so its "
                "objective is unknown; use ob.models.from_sklearn(estimator, n_samples=len(train))"
            )
        self.model_ = copy.deepcopy(self.model)
        self.train_ = train
        self.history_ = []
        self._timed_prepare()
        return self

    def _timed_prepare(self) -> None:
        if not self.exact and self.model_.theta.numel() == 0:
            raise TypeError(
                f"{self.name!r} updates a parameter vector, but {self.model_!r} has none; only "
                "the unlearners that retrain apply ('retrain', 'sisa' with slices=1)"
            )
        start = time.perf_counter()
        self._prepare()
        #: Seconds spent precomputing for ``forget`` (count it when comparing with retraining).
        self.prepare_seconds_ = time.perf_counter() - start

    def _check_params(self) -> None:
        """Validate hyper-parameters (called by ``fit`` and ``attach``)."""

    def _fit(self, train: Dataset) -> None:
        self.model_.fit(train)

    def _prepare(self) -> None:
        """Precompute what ``forget`` needs (e.g. a Hessian factorisation)."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"{type(self).__name__} is not fitted; call fit(train) or attach(train) first"
            )

    # -- unlearning ----------------------------------------------------------------------
    def forget(self, request: Request) -> UnlearnResult:
        """Apply ``request`` to the training set and update the model accordingly.

        Raises
        ------
        RequestError
            If the request is invalid for the current training set; nothing changes.
        """
        self._check_fitted()
        if not isinstance(request, Request):
            raise TypeError(
                f"forget() takes a request (Remove, Relabel, ReplaceFeatures, Replace), "
                f"got {type(request).__name__}"
            )
        try:
            change = request.resolve(self.train_)
        except RequestError as error:
            self._explain_removed(request, error)
            raise
        self._validate_change(change)
        start = time.perf_counter()
        if change.is_empty:
            outcome = Outcome()
        else:
            model_before = self.model_
            theta_before = self.model_.theta.clone()
            state_before = self._snapshot()
            try:
                outcome = self._forget(change)
            except BaseException:
                self.model_ = model_before
                self.model_.theta = theta_before
                self._restore(state_before)
                raise
        seconds = time.perf_counter() - start
        self.train_ = change.result
        if isinstance(request, Remove) and len(change):
            # Only ids are kept (no data), so a repeated request can say "already removed".
            self._removed_ids = np.union1d(
                getattr(self, "_removed_ids", np.zeros(0, np.int64)), change.before.ids
            )
        result = UnlearnResult(
            method=self.name,
            n_affected=len(change),
            exact=self.exact if outcome.exact is None else outcome.exact,
            seconds=seconds,
            retrained=outcome.retrained,
            certificate=outcome.certificate,
            diagnostics={k: float(v) for k, v in outcome.diagnostics.items()},
            request=type(request).__name__,
        )
        self.history_.append(result)
        return result

    def _explain_removed(self, request: Request, error: RequestError) -> None:
        """Re-raise an "unknown ids" error as "already removed" for ids this unlearner removed."""
        ids = getattr(request, "ids", None)
        removed = getattr(self, "_removed_ids", None)
        if ids is None or removed is None or not str(error).startswith("unknown ids"):
            return
        again = np.intersect1d(np.asarray(ids, dtype=np.int64), removed)
        if again.size:
            shown = ", ".join(str(i) for i in again[:10].tolist())
            more = f", ... ({again.size} in all)" if again.size > 10 else ""
            raise RequestError(
                f"ids already removed by an earlier request: [{shown}{more}]"
            ) from error

    def _validate_change(self, change: Change) -> None:
        """Method-specific checks before anything changes (raise RequestError)."""

    @abstractmethod
    def _forget(self, change: Change) -> Outcome:
        """Update ``self.model_`` for ``change``; ``self.train_`` is still the old set."""

    def _blank_model(self) -> Model:
        """An unfitted model that ``load`` fills with ``set_state`` (an ensemble for SISA)."""
        return self.model.clone()

    def _snapshot(self) -> Any:
        """Method state to restore if ``_forget`` fails (besides the model)."""
        return None

    def _restore(self, state: Any) -> None:
        """Undo ``_forget``'s changes to method state (inverse of :meth:`_snapshot`)."""

    # -- persistence ---------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Extra method state to save: (JSON-able dict, arrays)."""
        return {}, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_state` returned."""

    def save(self, path: str | os.PathLike) -> Path:
        """Save to folder ``path`` (``unlearner.json`` + ``arrays.npz``), atomically.

        Formats are safe to load (no pickle): JSON for options and history, ``.npz`` for
        parameters, model state and the current training set.
        """
        self._check_fitted()
        model_state = self.model_.get_state()
        meta_state, method_arrays = self._state()
        meta = {
            "format_version": _FORMAT_VERSION,
            "unlearner": self.name,
            "options": _jsonable(self.get_params()),
            "model": {"class": type(self.model).__name__, "params": _model_params(self.model)},
            "model_meta": _jsonable(model_state.pop("__meta__", {})),
            "train": {
                "feature_names": list(self.train_.feature_names or []) or None,
                "classes": _jsonable(
                    [
                        str(c) if not isinstance(c, (int, float, str)) else c
                        for c in self.train_.classes
                    ]
                ),
                "name": self.train_.name,
            },
            "history": [_jsonable(r.to_dict()) for r in self.history_],
            "state": _jsonable(meta_state),
        }
        arrays = _dataset_arrays("train__", self.train_)
        arrays.update({f"model__{k}": np.asarray(v) for k, v in model_state.items()})
        arrays.update({f"method__{k}": np.asarray(v) for k, v in method_arrays.items()})

        def write(folder: Path) -> None:
            with open(folder / "unlearner.json", "w") as handle:
                json.dump(meta, handle, indent=2)
            np.savez(folder / "arrays.npz", **arrays)

        write_atomically(Path(path), write)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, model: Model | None = None) -> Unlearner:
        """Load an unlearner saved by :meth:`save`.

        ``model`` is needed for torch models (an untrained instance of the same
        architecture); logistic regression is rebuilt from the saved hyper-parameters.
        """
        path = Path(path)
        with open(path / "unlearner.json") as handle:
            meta = json.load(handle)
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported format version {meta.get('format_version')!r}")
        klass = get(meta["unlearner"])
        if cls is not Unlearner and not issubclass(klass, cls):
            raise ValueError(f"{path} holds a {klass.__name__}, not a {cls.__name__}")
        if model is None:
            model = _rebuild_model(meta["model"])
        with np.load(path / "arrays.npz", allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        unlearner = klass(model, **meta["options"])
        unlearner.model_ = unlearner._blank_model()
        model_state = {k[len("model__") :]: v for k, v in arrays.items() if k.startswith("model__")}
        model_state["__meta__"] = meta.get("model_meta", {})
        unlearner.model_.set_state(model_state)
        unlearner.train_ = _dataset_from("train__", arrays, meta["train"])
        unlearner.history_ = [UnlearnResult.from_dict(r) for r in meta["history"]]
        unlearner._set_state(
            meta["state"],
            {k[len("method__") :]: v for k, v in arrays.items() if k.startswith("method__")},
        )
        return unlearner


def _model_params(model: Model) -> dict[str, Any]:
    params = {}
    for key, value in model.get_params().items():
        if isinstance(value, (np.ndarray, torch.Tensor)):
            continue  # arrays (e.g. noise) travel in the model state
        try:
            params[key] = _jsonable(value)
        except TypeError:
            params[key] = None
    return params


def _rebuild_model(spec: dict[str, Any]) -> Model:
    from oblivio import models

    klass = getattr(models, spec["class"], None)
    if spec["class"] != "LogisticRegression" or klass is None:
        raise ValueError(
            f"cannot rebuild a {spec['class']} from its saved options; pass an untrained "
            "instance of the same architecture as load(path, model=...)"
        )
    return klass(**spec["params"])
