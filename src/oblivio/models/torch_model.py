"""Adapter that gives any ``torch.nn.Module`` classifier the oblivio :class:`Model` protocol.

This module holds :class:`TorchModel`: its parameters, ``theta``, batching of the data,
``fit``, the first-order protocol (probabilities, losses, gradients) and state. The training
loop lives in ``_torch_training`` and the Hessian-vector products and Hessians in
``_torch_curvature`` (mixins ``TorchModel`` inherits from).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.func import functional_call, grad

from oblivio.data import Dataset
from oblivio.models._torch_curvature import DENSE_HESSIAN_LIMIT as DENSE_HESSIAN_LIMIT
from oblivio.models._torch_curvature import CurvatureMixin
from oblivio.models._torch_training import TrainingMixin
from oblivio.models.base import BaseModel, NotFittedError

__all__ = ["TorchModel"]

_LOSSES = ("cross_entropy",)
_OPTIMIZERS = ("adam", "sgd")


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target, reduction="none")


def _features(X: Any) -> Any:
    return X.X if isinstance(X, Dataset) else X


class TorchModel(TrainingMixin, CurvatureMixin, BaseModel):
    r"""Any ``nn.Module`` classifier behind the oblivio model protocol.

    Conventions (as :class:`~oblivio.models.LogisticRegression`, Guo et al., ICML 2020,
    Eq. 2): on n records ``loss`` is the **sum** of per-record cross-entropies,
    ``grad`` its gradient with respect to ``theta``, and ``hvp`` / ``hessian`` /
    ``objective`` refer to the objective

    .. math:: L(\theta; D) = \sum_i \ell(\theta; x_i, y_i) + \tfrac{l_2 n}{2}\|\theta\|^2 .

    ``theta`` is the flat vector of the parameters chosen by ``params`` (default: all
    trainable ones), in the module's ``named_parameters`` order; every other parameter and
    buffer is held fixed by ``theta``/``loss``/``grad``/``hvp``/``hessian``. Those are
    evaluated in evaluation mode (no dropout, batch-norm running statistics), batched over
    the data (``eval_batch_size`` records at a time) to bound memory; Hessian-vector
    products use ``torch.func`` forward-over-reverse differentiation through
    ``functional_call`` (Pearlmutter's trick), falling back to reverse-over-reverse for
    layers without forward-mode support.

    Training (``fit``) is mini-batch Adam or SGD on the **mean** convention: each batch of
    B records minimises ``(1/B) sum_batch l + l2/2 * ||w||^2``, whose expected gradient is
    ``1/n`` times the gradient of the sum-convention objective above, so ``l2`` means the
    same in both. ``w`` is every parameter being trained (all trainable parameters when
    ``train_all`` is true, else exactly ``theta``); its ``theta`` part is the objective's
    regulariser, so a stationary point of training is one of the objective in ``theta``.
    Training is deterministic given ``seed``: the module is a deep copy of the template,
    re-initialised under ``torch.manual_seed(seed)`` (``reset_parameters`` of every
    submodule that has one), batches are shuffled by a ``torch.Generator`` seeded with
    ``seed`` and dropout draws from the same seeded stream (the global RNG state is left
    untouched). Same seed, data, threads and device give bit-identical parameters.

    Parameters
    ----------
    module : nn.Module
        Template network mapping a batch of inputs to logits ``(B, n_classes)``. It is never
        modified; ``fit`` trains a copy (``module_``). Its dtype decides the arithmetic
        (``module.double()`` for float64 checks).
    loss : "cross_entropy" or callable
        Per-record loss; a callable takes ``(logits, targets)`` and returns the ``(B,)``
        per-record losses.
    l2 : float
        Per-record L2 strength (>= 0), sum convention as above.
    epochs : int
        Passes over the data in ``fit``.
    batch_size : int
        Mini-batch size of training.
    lr : float
        Learning rate.
    optimizer : {"adam", "sgd"}
        Optimiser of ``fit``.
    momentum : float
        Momentum of SGD (ignored by Adam).
    seed : int
        Seed of initialisation, shuffling and dropout.
    params : sequence of str, optional
        Parameter names or name prefixes (``["fc2"]`` selects ``fc2.weight`` and
        ``fc2.bias``) that make up ``theta``; ``None`` selects every parameter with
        ``requires_grad``.
    device : str or torch.device
        Where the module lives and computes (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        ``theta``, ``grad``, ``hvp`` and ``loss`` return tensors on this device; inputs
        may live anywhere.
    verbose : bool
        Show a progress bar during ``fit`` (the command-line tool turns it on).
    train_all : bool
        Train every trainable parameter in ``fit`` (default) or only those in ``theta``.
    reinit : bool
        Re-initialise the template from ``seed`` before training (default). With
        ``False`` training starts from the template's own values (e.g. a pre-trained
        network whose head is fine-tuned with ``params=[...]``, ``train_all=False``).
    eval_batch_size : int
        Records per batch in ``loss``/``grad``/``hvp``/``hessian``/``predict_proba``.

    Attributes
    ----------
    module_ : nn.Module
        The trained network (in evaluation mode).
    param_names : list of str
        Names of the parameters in ``theta``, in order.
    n_classes_ : int
        Number of classes of the training data.
    loss_fn : str or callable
        The ``loss`` argument (the name ``loss`` is the method).

    Examples
    --------
    >>> import oblivio as ob
    >>> train = ob.datasets.load("digits", normalize="l2").train
    >>> net = ob.models.MLP(train.n_features, hidden=(32,), n_classes=train.n_classes)
    >>> model = ob.models.TorchModel(net, l2=1e-4, epochs=5, lr=1e-2, params=["fc2"])
    >>> model = model.fit(train)
    >>> model.param_names
    ['fc2.weight', 'fc2.bias']
    >>> model.hvp(train, model.theta).shape
    torch.Size([330])
    """

    def __init__(
        self,
        module: nn.Module,
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy",
        l2: float = 0.0,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 1e-3,
        optimizer: str = "adam",
        momentum: float = 0.0,
        seed: int = 0,
        params: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        verbose: bool = False,
        train_all: bool = True,
        reinit: bool = True,
        eval_batch_size: int = 1024,
    ) -> None:
        self.module = module
        self.loss_fn = loss
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.seed = seed
        if isinstance(params, str):
            params = [params]
        self.params = None if params is None else list(params)
        self.device = device
        self.verbose = verbose
        self.train_all = train_all
        self.reinit = reinit
        self.eval_batch_size = eval_batch_size
        self._hvp_mode = "forward"

    # ``loss`` is both a constructor argument and a method: expose the argument to
    # get_params/clone under its constructor name.
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments of this model (``loss`` is the loss name or callable)."""
        params = super().get_params()
        params["loss"] = self.loss_fn
        return params

    # -- validation --------------------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(self.module).__name__}")
        if not (isinstance(self.loss_fn, str) and self.loss_fn in _LOSSES) and not callable(
            self.loss_fn
        ):
            raise ValueError(f"loss must be one of {_LOSSES} or a callable, got {self.loss_fn!r}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {self.l2!r}")
        for name in ("epochs",):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        torch.device(self.device)  # raises on a malformed device string
        self._select(self.module)

    def _select(self, module: nn.Module) -> list[str]:
        """Names of the parameters in ``theta`` (module order)."""
        named = list(module.named_parameters())
        if self.params is None:
            names = [name for name, p in named if p.requires_grad]
        else:
            wanted = list(self.params)
            names = [
                name
                for name, _ in named
                if any(name == w or name.startswith(w + ".") for w in wanted)
            ]
            unmatched = [
                w for w in wanted if not any(n == w or n.startswith(w + ".") for n, _ in named)
            ]
            if unmatched:
                raise ValueError(
                    f"params {unmatched!r} match no parameter of {type(module).__name__}; "
                    f"its parameters are {[n for n, _ in named]!r}"
                )
        if not names:
            raise ValueError(f"{type(module).__name__} has no parameters to put in theta")
        return names

    # -- fitted state -------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return getattr(self, "module_", None) is not None

    def _check_fitted(self) -> nn.Module:
        module = getattr(self, "module_", None)
        if module is None:
            raise NotFittedError("TorchModel is not fitted; call fit() first")
        return module

    @property
    def param_names(self) -> list[str]:
        """Names of the parameters that make up ``theta``, in order."""
        module = getattr(self, "module_", None)
        return self._select(self.module if module is None else module)

    def _chosen(self) -> list[nn.Parameter]:
        module = self._check_fitted()
        lookup = dict(module.named_parameters())
        return [lookup[name] for name in self._names_]

    @property
    def n_params(self) -> int:
        """Length of ``theta``."""
        return int(sum(p.numel() for p in self._chosen()))

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters in ``theta``."""
        return self._chosen()[0].dtype

    @property
    def theta(self) -> torch.Tensor:
        """Flat copy of the chosen parameters (module dtype, module device)."""
        with torch.no_grad():
            return torch.cat([p.detach().reshape(-1) for p in self._chosen()]).clone()

    @theta.setter
    def theta(self, value: Any) -> None:
        chosen = self._chosen()
        size = sum(p.numel() for p in chosen)
        if not isinstance(value, torch.Tensor):
            value = np.array(value)  # a writable copy (datasets hold read-only arrays)
        flat = torch.as_tensor(value).detach().reshape(-1)
        if flat.numel() != size:
            raise ValueError(
                f"theta must have {size} entries ({', '.join(self._names_)}), got {flat.numel()}"
            )
        if not bool(torch.isfinite(flat).all()):
            raise ValueError("theta contains non-finite values")
        with torch.no_grad():
            offset = 0
            for p in chosen:
                p.copy_(flat[offset : offset + p.numel()].view_as(p).to(p))
                offset += p.numel()

    def _as_theta(self, theta: Any) -> torch.Tensor:
        """``theta`` (or the current parameters) as a flat tensor on the module."""
        if theta is None:
            return self.theta
        chosen = self._chosen()
        size = sum(p.numel() for p in chosen)
        if not isinstance(theta, torch.Tensor):
            theta = np.array(theta)
        flat = torch.as_tensor(theta)
        reference = chosen[0]
        flat = flat.to(device=reference.device, dtype=reference.dtype).reshape(-1)
        if flat.numel() != size:
            raise ValueError(f"theta must have {size} entries, got {flat.numel()}")
        return flat

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        chosen = self._chosen()
        out, offset = {}, 0
        for name, p in zip(self._names_, chosen, strict=True):
            out[name] = flat[offset : offset + p.numel()].view(p.shape)
            offset += p.numel()
        return out

    # -- data --------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return torch.device(self.device)

    def _float_dtype(self, module: nn.Module) -> torch.dtype:
        for p in module.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()

    def _token_input(self) -> bool:
        """Integer inputs are token ids (kept as int64) when the module embeds them."""
        module = getattr(self, "module_", None)
        module = self.module if module is None else module
        return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in module.modules())

    def _to_tensor(self, X: Any, dtype: torch.dtype) -> torch.Tensor:
        """Features as a tensor on the device: floats in the module's dtype; integer
        inputs as int64 token ids for modules with an embedding, else as floats."""
        if sp.issparse(X):
            X = X.toarray()
        # np.array copies: dataset arrays are read-only
        tensor = X.detach() if isinstance(X, torch.Tensor) else torch.from_numpy(np.array(X))
        if tensor.is_floating_point() or not self._token_input():
            tensor = tensor.to(dtype)
        elif tensor.dtype != torch.long:
            tensor = tensor.long()
        return tensor.to(self._device())

    def _batches(self, data: Any, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Consecutive batches ``(x, y)`` (``y`` None when ``data`` is bare features)."""
        module = self._check_fitted()
        dtype = self._float_dtype(module)
        X = _features(data)
        if not (sp.issparse(X) or isinstance(X, (np.ndarray, torch.Tensor))):
            X = np.asarray(X)
        y = data.y if isinstance(data, Dataset) else None
        n = X.shape[0]
        for start in range(0, n, size):
            stop = min(start + size, n)
            xb = self._to_tensor(X[start:stop], dtype)
            yb = None
            if y is not None:
                yb = torch.from_numpy(np.array(y[start:stop], dtype=np.int64)).to(xb.device)
            yield xb, yb

    def _per_record(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if callable(self.loss_fn):
            return self.loss_fn(logits, target)
        return _cross_entropy(logits, target)

    @contextmanager
    def _eval(self) -> Iterator[nn.Module]:
        module = self._check_fitted()
        modes = [(m, m.training) for m in module.modules()]
        module.eval()
        try:
            yield module
        finally:
            for m, training in modes:
                m.training = training

    def _batch_loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum of per-record losses on one batch, with ``theta = flat`` substituted."""
        logits = functional_call(self.module_, self._unflatten(flat), (x,), strict=False)
        return self._per_record(logits, y).sum()

    # -- training ------------------------------------------------------------------------
    def _initial_module(self, init: Any) -> nn.Module:
        module = copy.deepcopy(self.module)
        if isinstance(init, TorchModel):
            init = init._check_fitted().state_dict()
        if init is None or isinstance(init, dict):
            if self.reinit:
                torch.manual_seed(self.seed)
                for sub in module.modules():
                    reset = getattr(sub, "reset_parameters", None)
                    if callable(reset):
                        reset()
            if isinstance(init, dict):
                state = {k: torch.as_tensor(v) for k, v in init.items() if k != "__meta__"}
                module.load_state_dict(state)
        return module

    def fit(self, data: Dataset, *, init: Any = None, epochs: int | None = None) -> TorchModel:
        """Train a fresh copy of the template on ``data``.

        Parameters
        ----------
        data : Dataset
            Training records; labels in ``0 .. data.n_classes - 1``.
        init : flat tensor, state dict or fitted TorchModel, optional
            Continue training from these parameters instead of the seed's initialisation.
            A flat tensor is a ``theta`` (only the chosen parameters; the others start from
            the seed's initialisation, so with ``params`` set pass a state dict or a fitted
            ``TorchModel`` to warm-start everything).
        epochs : int, optional
            Overrides ``self.epochs`` for this call.
        """
        self._check_params()
        if not isinstance(data, Dataset):
            raise TypeError(f"fit() takes a Dataset, got {type(data).__name__}")
        if len(data) == 0:
            raise ValueError("cannot fit on an empty dataset")
        n_epochs = self.epochs if epochs is None else epochs
        if isinstance(n_epochs, bool) or int(n_epochs) != n_epochs or n_epochs < 0:
            raise ValueError(f"epochs must be an integer >= 0, got {n_epochs!r}")
        device = self._device()
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            module = self._initial_module(init).to(device)
            self.module_ = module
            self._names_ = self._select(module)
            if init is not None and not isinstance(init, (dict, TorchModel)):
                self.theta = init
            self.n_classes_ = int(data.n_classes)
            self._check_outputs(data)
            self._train(module, data, int(n_epochs))
        module.eval()
        return self

    # -- protocol ------------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax of the logits, ``(n, n_outputs)`` float64, computed in batches."""
        chunks = []
        with torch.no_grad(), self._eval() as module:
            for xb, _ in self._batches(X, self.eval_batch_size):
                chunks.append(torch.softmax(module(xb), dim=-1).to("cpu", torch.float64))
        if not chunks:
            return np.zeros((0, self._output_width()))
        return torch.cat(chunks).numpy()

    def _output_width(self) -> int:
        return int(getattr(self, "n_classes_", 0))

    def per_record_loss(self, data: Dataset, theta: Any = None) -> np.ndarray:
        """Per-record losses ``(n,)`` as float64 (evaluation mode)."""
        flat = self._as_theta(theta)
        chunks = []
        with torch.no_grad(), self._eval():
            for xb, yb in self._batches(data, self.eval_batch_size):
                logits = functional_call(self.module_, self._unflatten(flat), (xb,), strict=False)
                chunks.append(self._per_record(logits, yb).to("cpu", torch.float64))
        return torch.cat(chunks).numpy() if chunks else np.zeros(0)

    def loss(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        """Sum of per-record losses on ``data`` (no regulariser), a scalar tensor.

        Differentiable with respect to ``theta`` when a ``theta`` that requires grad is
        passed; otherwise computed without a graph.
        """
        track = isinstance(theta, torch.Tensor) and theta.requires_grad
        flat = self._as_theta(theta)
        total = torch.zeros((), dtype=flat.dtype, device=flat.device)
        with torch.set_grad_enabled(track), self._eval():
            for xb, yb in self._batches(data, self.eval_batch_size):
                total = total + self._batch_loss(flat, xb, yb)
        return total

    def grad(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        """Gradient of :meth:`loss` (sum of per-record losses) with respect to ``theta``."""
        flat = self._as_theta(theta).detach()
        total = torch.zeros_like(flat)
        with self._eval():
            for xb, yb in self._batches(data, self.eval_batch_size):
                total += grad(self._batch_loss)(flat, xb, yb).detach()
        return total

    def objective_grad(self, data: Dataset, theta: Any = None) -> torch.Tensor:
        """Gradient of :meth:`objective`: ``grad + l2 * n * theta``."""
        flat = self._as_theta(theta).detach()
        return self.grad(data, flat) + self.l2 * len(data) * flat

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The module's full ``state_dict`` as numpy arrays, plus a JSON-able ``__meta__``."""
        module = self._check_fitted()
        state: dict[str, Any] = {
            name: value.detach().cpu().numpy().copy() for name, value in module.state_dict().items()
        }
        state["__meta__"] = {
            "param_names": list(self._names_),
            "n_classes": int(getattr(self, "n_classes_", 0)),
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`get_state` (onto a copy of the template).

        The state is the whole module, so it may be loaded into a model that selects
        different ``params`` for ``theta``.
        """
        module = copy.deepcopy(self.module)
        tensors = {
            k: v.detach() if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v))
            for k, v in state.items()
            if k != "__meta__"
        }
        module.load_state_dict(tensors)
        self.module_ = module.to(self._device()).eval()
        self._names_ = self._select(self.module_)
        meta = state.get("__meta__") or {}
        self.n_classes_ = int(meta.get("n_classes", 0))

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.get_params().items() if k != "module"}
        options = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"TorchModel({type(self.module).__name__}, {options})"
