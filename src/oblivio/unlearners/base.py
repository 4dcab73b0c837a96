"""The unlearner base class, its result types and the registry."""

from __future__ import annotations

import copy
import inspect
import os
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from oblivio.data import Change, Dataset, Remove, Request, RequestError
from oblivio.models.base import Model, NotFittedError
from oblivio.models.nets import NETWORKS
from oblivio.unlearners import _persist
from oblivio.unlearners._persist import LoadError, StateError, dataset_arrays

__all__ = [
    "Certificate",
    "LoadError",
    "ON_FAILURE",
    "Outcome",
    "UnlearnResult",
    "UnlearningError",
    "UnlearningWarning",
    "Unlearner",
    "available",
    "create",
    "register",
    "StateError",
]

_FORMAT_VERSION = 2


class UnlearningWarning(UserWarning):
    """An approximate method did not land: its update left the model about as far from
    what retraining gives as doing nothing would (``diagnostics["landed"] == 0``)."""


class UnlearningError(RuntimeError):
    """``on_failure="raise"`` and the method did not land; nothing was changed."""


#: What a method does when its own check says the update did not land.
ON_FAILURE = ("raise", "warn", "ignore")

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_count(name: str, value: object) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not (isinstance(value, (int, np.integer)) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def warn_missed(message: str) -> None:
    """Emit ``UnlearningWarning`` attributed to the first caller outside oblivio."""
    frame, level = inspect.currentframe(), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UnlearningWarning, stacklevel=level)


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

    # -- did the update land? ----------------------------------------------------------
    @staticmethod
    def _check_on_failure(value: Any) -> None:
        if value not in ON_FAILURE:
            raise ValueError(
                f"on_failure must be one of {', '.join(map(repr, ON_FAILURE))}, got {value!r}"
            )

    def _judge(self, diagnostics: dict[str, float], landed: bool, message: str) -> None:
        """Record whether the update landed and act on ``self.on_failure`` when it did not.

        Every approximate method calls this with its own check (e.g. its residual against
        the residual of doing nothing). ``diagnostics["landed"]`` is 1 or 0 either way. On a
        miss: ``"warn"`` (default) emits :class:`UnlearningWarning` with ``message``,
        ``"raise"`` raises :class:`UnlearningError` (``forget`` then rolls everything back),
        ``"ignore"`` only sets the diagnostic.
        """
        diagnostics["landed"] = float(landed)
        if landed:
            return
        policy = getattr(self, "on_failure", "warn")
        text = f"{self.name}: {message}"
        if policy == "raise":
            raise UnlearningError(f"{text} Nothing was changed (on_failure='raise').")
        if policy != "ignore":
            warn_missed(text)

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
        """Save to folder ``path``: ``unlearner.json`` + one ``arrays-<token>.npz``.

        Formats are safe to load (no pickle): JSON for options and history, ``.npz`` for
        parameters, model state and the current training set. Only the current state is
        written. The write is crash-proof: the path always holds one complete save (the
        old one or the new one) and what a crash leaves beside it is removed by the next
        save or load (see :mod:`oblivio.unlearners._persist`). A non-empty folder that is
        not an oblivio save is refused, never replaced.
        """
        self._check_fitted()
        model_state = self.model_.get_state()
        meta_state, method_arrays = self._state()
        meta = {
            "format_version": _FORMAT_VERSION,
            "unlearner": self.name,
            "options": _jsonable(self.get_params()),
            "model": _model_spec(self.model),
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
        arrays = dataset_arrays("train__", self.train_)
        arrays.update({f"model__{k}": np.asarray(v) for k, v in model_state.items()})
        arrays.update({f"method__{k}": np.asarray(v) for k, v in method_arrays.items()})
        return _persist.write(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, model: Model | None = None) -> Unlearner:
        """Load and check an unlearner saved by :meth:`save` (see :func:`oblivio.load`).

        ``model`` is needed for torch models whose network is not one of oblivio's
        (:data:`oblivio.models.nets.NETWORKS`, rebuilt from their saved ``architecture``)
        or whose loss is a function: an untrained instance of the same architecture, its
        hyper-parameters replaced by the saved ones. Logistic regression is rebuilt from
        the saved hyper-parameters.

        Raises
        ------
        LoadError
            Anything missing, corrupt or inconsistent; the message names file and field.
        """
        return _load_checked(cls, Path(path), model)

    # -- load checks (methods extend these) -------------------------------------------
    def _check_loaded_params(self) -> None:
        """Option checks of a loaded unlearner (the same as ``fit`` runs by default)."""
        self._check_params()


def _model_spec(model: Model) -> dict[str, Any]:
    """Class, JSON-able hyper-parameters and (for torch) the module's class of ``model``."""
    params: dict[str, Any] = {}
    unsaved: list[str] = []
    for key, value in model.get_params().items():
        if isinstance(value, (np.ndarray, torch.Tensor)):
            continue  # arrays (e.g. noise) travel in the model state
        try:
            params[key] = _jsonable(value)
        except TypeError:
            params[key] = None
            unsaved.append(key)
    spec: dict[str, Any] = {"class": type(model).__name__, "params": params, "unsaved": unsaved}
    module = getattr(model, "module", None)
    if isinstance(module, torch.nn.Module):
        spec["module_class"] = type(module).__name__
        if NETWORKS.get(type(module).__name__) is type(module):
            # one of oblivio's networks: its constructor arguments rebuild it on load
            spec["module_args"] = _jsonable(module.architecture)
    return spec


def _load_checked(cls: type[Unlearner], path: Path, model: Model | None) -> Unlearner:
    meta, arrays = _persist.read(path)
    file = path / _persist.META_FILE
    spec = meta.get("arrays")
    arrays_file = path / (spec["file"] if isinstance(spec, dict) else "arrays.npz")
    for key, kind in (
        ("unlearner", str),
        ("options", dict),
        ("model", dict),
        ("train", dict),
        ("history", list),
        ("state", dict),
        ("model_meta", dict),
    ):
        if not isinstance(meta.get(key), kind):
            raise LoadError(file, f"expected a {kind.__name__}, got {meta.get(key)!r}", key)
    try:
        klass = get(meta["unlearner"])
    except ValueError as error:
        raise LoadError(file, str(error), "unlearner") from None
    if cls is not Unlearner and not issubclass(klass, cls):
        raise LoadError(file, f"holds a {klass.__name__}, not a {cls.__name__}", "unlearner")
    template = _persist.rebuild_model(file, meta["model"], model)
    try:
        unlearner = klass(template, **meta["options"])
        unlearner._check_loaded_params()
    except (TypeError, ValueError) as error:
        text = str(error)
        names = sorted(meta["options"], key=len, reverse=True)
        field = next((f"options.{k}" for k in names if text.startswith(f"{k} ")), "options")
        raise LoadError(file, text, field) from None
    for key, value in arrays.items():
        _persist.check_array(arrays_file, key, value)
    unlearner.train_ = _persist.dataset_from(arrays_file, "train__", arrays, meta["train"])
    unlearner.model_ = unlearner._blank_model()
    model_state = {k[len("model__") :]: v for k, v in arrays.items() if k.startswith("model__")}
    model_state["__meta__"] = meta["model_meta"]
    try:
        unlearner.model_.set_state(model_state)
    except Exception as error:  # noqa: BLE001 - torch/numpy raise many kinds here
        raise LoadError(
            arrays_file,
            f"the saved state does not fit {unlearner.model_!r} ({type(error).__name__}: {error})",
            "model",
        ) from None
    _persist.check_model(arrays_file, unlearner)
    history = []
    for index, entry in enumerate(meta["history"]):
        try:
            result = UnlearnResult.from_dict(entry)
        except (TypeError, ValueError, AttributeError) as error:
            raise LoadError(file, str(error), f"history[{index}]") from None
        history.append(result)
    unlearner.history_ = history
    method_arrays = {k[len("method__") :]: v for k, v in arrays.items() if k.startswith("method__")}
    try:
        unlearner._set_state(meta["state"], method_arrays)
    except StateError as error:
        raise LoadError(file, str(error), f"state.{error.field}") from None
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise LoadError(file, f"{type(error).__name__}: {error}", "state") from None
    return unlearner


def load(path: str | os.PathLike, model: Model | None = None) -> Unlearner:
    """Load an unlearner saved with ``save``, checking everything before returning it.

    Checked: the files are complete and uncorrupted (SHA-256), options pass the checks
    ``fit`` runs, arrays are finite with the right shapes and dtypes, ids are unique, the
    model fits the data, and each method's state is consistent (certified removal re-derives
    its spent budget and row norms; SISA its layout). Torch models on oblivio's networks
    (``MLP``, ``SmallCNN``, ``CharLSTM``) are rebuilt from the save; others need ``model``,
    an untrained instance of the saved architecture, whose hyper-parameters the saved ones
    replace.

    Raises
    ------
    LoadError
        The message names the file and the field at fault. Nothing is returned.
    """
    return Unlearner.load(path, model)
