"""Building blocks for unlearning neural classifiers, on plain ``torch.nn.Module`` objects.

Pure functions used by the neural unlearners (:mod:`oblivio.unlearners.l2ul` and others):
targeted L2 projected gradient descent (the adversarial examples of L2UL), MAS weight
importance and its inverted min–max normalisation, the complementary-label loss, and small
helpers (device, tensors, batch-norm modes, goal checks, seeded mini-batch streams).
References: Cha et al., *Learning to Unlearn: Instance-wise Unlearning for Pre-trained
Classifiers*, AAAI 2024 (``reference/instance-unlearning.md`` §3–§4); Aljundi et al.,
*Memory Aware Synapses*, ECCV 2018; Madry et al., ICLR 2018 (PGD).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from oblivio.data import Change

__all__ = [
    "as_inputs",
    "complement_loss",
    "draw_targets",
    "invert_importance",
    "label_margin",
    "logit_margins",
    "mas_importance",
    "module_device",
    "predict_labels",
    "runner_up_loss",
    "targeted_l2_pgd",
]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (CPU for a module without parameters)."""
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def _float_dtype(module: nn.Module) -> torch.dtype:
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def as_inputs(X: np.ndarray | sp.csr_matrix | torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``X`` as a tensor on the module's device (floating inputs in the module's dtype).

    Integer inputs (token ids for embedding models) keep an integer dtype.
    """
    if isinstance(X, torch.Tensor):
        tensor = X
    else:
        array = X.toarray() if sp.issparse(X) else np.asarray(X)
        tensor = torch.from_numpy(np.array(array))  # a writable copy
    if tensor.is_floating_point():
        tensor = tensor.to(_float_dtype(module))
    elif tensor.dtype != torch.bool:
        tensor = tensor.long()
    return tensor.to(module_device(module))


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then restore every submodule's mode."""
    modes = [m.training for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in zip(module.modules(), modes, strict=True):
            m.training = mode


def set_train_mode(module: nn.Module, bn_mode: str, batch_size: int | None = None) -> None:
    """Train mode for updates; with ``bn_mode="eval"`` batch-norm layers stay in eval mode.

    L2UL updates in train mode, so batch-norm running statistics drift with the forget and
    adversarial batches (reference §5, pitfall 8): ``bn_mode="train"`` replicates it. A
    batch of one record (``batch_size=1``) runs batch norm in eval mode: batch statistics
    need two values.
    """
    module.train()
    if bn_mode == "eval" or batch_size == 1:
        for m in module.modules():
            if isinstance(m, _BATCH_NORMS):
                m.eval()


#: Records per forward pass when the unlearners only evaluate on a CPU: a SmallCNN takes
#: 0.16 ms per image in batches of 128-256 and 0.23 ms in batches of 1,024 (cache), and the
#: deletion loop's checks and margins are a third of its time.
EVAL_BATCH = 256
#: The same on an accelerator, where a pass is bound by kernel launches, not by cache.
EVAL_BATCH_ACCELERATOR = 4096


def eval_batch(device: torch.device | str) -> int:
    """Records per evaluation pass on ``device`` (:data:`EVAL_BATCH` on a CPU)."""
    return EVAL_BATCH if torch.device(device).type == "cpu" else EVAL_BATCH_ACCELERATOR


@torch.no_grad()
def predict_labels(
    module: nn.Module,
    X: torch.Tensor,
    batch_size: int | None = None,
    *,
    with_finite: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, bool]:
    """Arg-max predictions of ``module`` in eval mode (its modes are restored afterwards).

    ``batch_size`` defaults to :func:`eval_batch` of ``X``'s device. With
    ``with_finite=True`` also returns whether every output was finite: the arg-max of an
    overflowed (inf or NaN) output is meaningless, and a run that produces one has
    diverged, whatever the predictions say. The check costs one host-device
    synchronisation per call, not one per batch.
    """
    size = batch_size or eval_batch(X.device)
    outputs = []
    finite = torch.ones((), dtype=torch.bool, device=X.device)
    with evaluating(module):
        for start in range(0, X.shape[0], size):
            logits = module(X[start : start + size])
            if with_finite:
                finite &= torch.isfinite(logits).all()
            outputs.append(logits.argmax(dim=1))
    labels = torch.cat(outputs) if outputs else torch.zeros(0, dtype=torch.long, device=X.device)
    return (labels, bool(finite)) if with_finite else labels


def of_kept_classes(y: np.ndarray, change: Change) -> np.ndarray:
    """Mask of the labels ``y`` whose class keeps training records after ``change``; a class
    with none left is deleted (retraining never predicts it)."""
    return np.isin(y, np.unique(change.result.y))


def draw_targets(
    y: np.ndarray,
    n_classes: int,
    n_per_record: int,
    rng: np.random.Generator,
    *,
    sampling: str = "uniform",
) -> np.ndarray:
    """Target classes for the adversarial examples of each record (reference §3, step 2).

    Returns an array of shape ``(len(y) * n_per_record,)``: record ``i``'s targets occupy
    positions ``i * n_per_record .. (i + 1) * n_per_record - 1``.

    Parameters
    ----------
    sampling : {"uniform", "original"}
        ``"uniform"`` (default): uniform over the classes other than the record's label.
        ``"original"``: the released code's rule, uniform over all classes with a collision
        replaced by class ``n_classes // 2`` (which can equal the label itself).
    """
    if n_classes < 2:
        raise ValueError(f"adversarial targets need at least 2 classes, got {n_classes}")
    labels = np.repeat(np.asarray(y, dtype=np.int64), n_per_record)
    if sampling == "uniform":
        shift = rng.integers(1, n_classes, size=labels.shape[0])
        return (labels + shift) % n_classes
    if sampling == "original":
        targets = rng.integers(0, n_classes, size=labels.shape[0])
        targets[targets == labels] = n_classes // 2
        return targets
    raise ValueError(f"sampling must be 'uniform' or 'original', got {sampling!r}")


def complement_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-record ``-log(1 - p_y)``: the cross-entropy towards "any class but ``y``".

    ``p_y = softmax(logits)_y``. Computed stably as ``logsumexp(z) - logsumexp(z_{-y})``
    (finite even when ``p_y`` rounds to 1). Its gradient with respect to the logit ``z_y`` is
    ``p_y``: large for a confidently correct record, vanishing once the record is
    confidently misclassified, and the loss is bounded below by 0. The negative
    cross-entropy ``-CE = log p_y`` behaves the other way round (gradient ``1 - p_y`` on
    ``z_y``, unbounded below), which is why gradient ascent stalls on confident records and
    runs away on forgotten ones. This is the complementary-label ("negative learning") loss
    of Kim et al., *NLNL: Negative Learning for Noisy Labels*, ICCV 2019, Eq. 2.

    Returns
    -------
    Tensor of shape (n,)
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"need logits of shape (n, C >= 2), got {tuple(logits.shape)}")
    others = _without_label(logits, labels)
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(others, dim=1)


def runner_up_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-record cross-entropy towards the runner-up class ``r = argmax_{j != y} z_j``.

    The class a record is closest to moving into, read from the current logits (``r`` is
    a constant for the gradient): pushing each record there is the smallest change that
    stops the model predicting ``y``, where ``-CE`` or ``-log(1 - p_y)`` spread the push
    over every other class. Unlike those it keeps pulling once the record is misclassified
    (towards ``p_r = 1``), so it is meant to be used with a per-record stop (records at
    their goal contribute nothing; :class:`~oblivio.unlearners.L2UL`).

    Returns
    -------
    Tensor of shape (n,)
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"need logits of shape (n, C >= 2), got {tuple(logits.shape)}")
    others = _without_label(logits.detach(), labels)
    return nn.functional.cross_entropy(logits, others.argmax(dim=1), reduction="none")


def label_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per record, the logit of its label minus its largest other logit (negative when the
    record is misclassified); differentiable in ``logits``."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    return own - _without_label(logits, labels).max(dim=1).values


@torch.no_grad()
def logit_margins(module: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Margin of each record in eval mode: its label's logit minus the largest other."""
    out = []
    size = eval_batch(X.device)
    with evaluating(module):
        for start in range(0, X.shape[0], size):
            stop = start + size
            out.append(label_margin(module(X[start:stop]), y[start:stop]))
    return torch.cat(out) if out else torch.zeros(0, device=X.device)


def _without_label(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logits`` with each record's own label's entry at ``-inf``."""
    return logits.masked_fill(nn.functional.one_hot(labels, logits.shape[1]).bool(), -torch.inf)


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.flatten(1), dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    norms = _per_sample_norm(delta)
    factor = torch.clamp(eps / torch.clamp(norms, min=1e-12), max=1.0)
    return delta * factor


def targeted_l2_pgd(
    module: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    eps: float = 4.0,
    step: float = 0.1,
    steps: int = 100,
    clip: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Targeted L2 projected gradient descent with a random start (reference §3, step 3).

    Semantics of advertorch's ``L2PGDAttack(targeted=True, rand_init=True)``: start from
    ``delta = u - x`` with ``u ~ U[lo, hi]^dim``, rescaled into the ball ``||delta||_2 <= eps``
    and clipped so that ``x + delta`` lies in ``[lo, hi]``; then ``steps`` times

    ``delta <- delta - step * g / ||g||_2``,  ``g = grad_delta CE(f(x + delta), target)``

    (per-sample normalisation; descent because the attack is targeted), clip ``x + delta``
    to ``[lo, hi]`` and project ``delta`` onto the L2 ball of radius ``eps``. Because the box
    contains ``delta = 0`` the projection keeps the box constraint, so the output satisfies
    both. The module runs in eval mode; its parameters receive no gradient.

    Parameters
    ----------
    module : nn.Module
        Classifier returning logits.
    x : Tensor of shape (n, ...)
        Clean inputs inside ``clip``.
    target : Tensor of shape (n,)
        Target classes.
    eps, step, steps : float, float, int
        Radius of the L2 ball (in input units, over all input values of a record), step
        length and number of steps.
    clip : (float, float)
        The valid input range ``[lo, hi]`` (the model's real input range, not assumed
        [0, 1]: reference pitfall 5).
    generator : torch.Generator, optional
        CPU generator for the random start (seeded by the caller for repeatability).

    Returns
    -------
    Tensor
        ``x_adv`` with ``||x_adv - x||_2 <= eps`` (up to float rounding) and values in
        ``[lo, hi]``.
    """
    if eps <= 0 or step <= 0 or steps < 0:
        raise ValueError(f"need eps > 0, step > 0, steps >= 0; got {eps}, {step}, {steps}")
    lo, hi = float(clip[0]), float(clip[1])
    if not lo < hi:
        raise ValueError(f"clip must be an interval lo < hi, got {clip!r}")
    if not x.is_floating_point():
        raise ValueError("adversarial examples need floating-point inputs (not token ids)")
    requires = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    outputs = []
    try:
        with evaluating(module):
            for start in range(0, x.shape[0], batch_size):
                xb = x[start : start + batch_size].detach()
                tb = target[start : start + batch_size].to(xb.device, torch.long)
                u = torch.rand(xb.shape, generator=generator, dtype=xb.dtype)
                u = (lo + (hi - lo) * u).to(xb.device)
                delta = _project_l2(u - xb, eps)
                delta = torch.clamp(xb + delta, lo, hi) - xb
                for _ in range(steps):
                    delta.requires_grad_(True)
                    loss = nn.functional.cross_entropy(module(xb + delta), tb, reduction="sum")
                    (grad,) = torch.autograd.grad(loss, delta)
                    with torch.no_grad():
                        grad = grad / torch.clamp(_per_sample_norm(grad), min=1e-12)
                        delta = delta - step * grad
                        delta = torch.clamp(xb + delta, lo, hi) - xb
                        delta = _project_l2(delta, eps)
                outputs.append(torch.clamp(xb + delta.detach(), lo, hi))
    finally:
        for p, flag in zip(module.parameters(), requires, strict=True):
            p.requires_grad_(flag)
    if not outputs:
        return x.detach().clone()
    return torch.cat(outputs)


def mas_importance(
    module: nn.Module, x: torch.Tensor, *, batch_size: int = 32
) -> dict[str, torch.Tensor]:
    """MAS importance of every trainable parameter on the inputs ``x`` (reference §4, step 1).

    ``Omega_j = (1 / N') * sum_B |B| * | d/d theta_j [ (1/|B|) sum_{x in B} ||g(x)||_2 ] |``

    with ``N' = (floor(k / batch_size) + 1) * batch_size`` (Aljundi et al., ECCV 2018, Eq. 10,
    as used by L2UL): the **un-squared** L2 norm of the logit vector, the absolute value of
    the **batch-mean** gradient, consecutive unshuffled batches. The module runs in train
    mode (batch norm uses batch statistics, as in the released code) on the given weights;
    a batch of a single record runs its batch-norm layers in eval mode (batch statistics
    need two values). Gradients are taken per batch (``torch.autograd.grad``), so nothing
    accumulates across batches (pitfall 4) and the module's ``.grad`` fields are untouched.
    The running statistics of batch-norm layers are restored afterwards.

    Returns
    -------
    dict of str to Tensor
        ``Omega`` per named trainable parameter, same shapes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    totals = {n: torch.zeros_like(p) for n, p in named}
    k = x.shape[0]
    buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
    modes = [m.training for m in module.modules()]
    try:
        module.train()
        for start in range(0, k, batch_size):
            xb = x[start : start + batch_size]
            if xb.shape[0] == 1:
                for m in module.modules():
                    if isinstance(m, _BATCH_NORMS):
                        m.eval()
            out = module(xb)
            objective = torch.linalg.vector_norm(out.flatten(1), dim=1).mean()
            grads = torch.autograd.grad(objective, [p for _, p in named], allow_unused=True)
            for (n, _), g in zip(named, grads, strict=True):
                if g is not None:
                    totals[n] += xb.shape[0] * g.abs()
            module.train()
    finally:
        for m, mode in zip(module.modules(), modes, strict=True):
            m.training = mode
        with torch.no_grad():
            for n, b in module.named_buffers():
                b.copy_(buffers[n])
    scale = (k // batch_size + 1) * batch_size
    return {n: t / scale for n, t in totals.items()}


def invert_importance(importance: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-tensor min–max normalisation, then inversion (reference §4, step 2).

    ``Omega~ = 1 - (Omega - min) / (max - min)`` per tensor, so weights most important for the
    forget set get ``~0`` (free to move) and unimportant ones ``~1`` (anchored). A tensor
    whose importance is constant (e.g. all-zero gradients) gets ``Omega~ = 1`` everywhere
    instead of NaN (pitfall 3).
    """
    inverted = {}
    for name, omega in importance.items():
        lo, hi = omega.min(), omega.max()
        span = hi - lo
        if omega.numel() == 0 or not torch.isfinite(span) or span <= 0:
            inverted[name] = torch.ones_like(omega)
        else:
            inverted[name] = 1.0 - (omega - lo) / span
    return inverted


# -- seeded batches and shared option checks ---------------------------------------------
def random_other_labels(
    labels: torch.Tensor, n_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Labels drawn uniformly from the classes other than ``labels`` (SalUn, Eq. 8)."""
    shift = torch.randint(1, n_classes, labels.shape, generator=generator)
    return (labels + shift.to(labels.device)) % n_classes


def model_other_labels(
    logits: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Labels drawn from the model's own odds over the classes other than ``labels``.

    Record ``i`` takes class ``j != labels[i]`` with probability ``softmax(logits_i)_j /
    (1 - softmax(logits_i)_{labels[i]})`` (``logits`` are read, not differentiated): a
    random label among the classes the record resembles, where
    :func:`random_other_labels` draws among all of them alike. Drawn on the CPU with
    ``generator`` (seeded on every device) and returned on ``labels``' device.
    """
    odds = torch.softmax(_without_label(logits.detach().float(), labels), dim=1).cpu()
    return torch.multinomial(odds, 1, generator=generator).squeeze(1).to(labels.device)


def check_budget(budget: Any) -> None:
    if not (isinstance(budget, (int, float)) and 0 < budget <= 10):
        raise ValueError(
            f"budget (a fraction of the original training) must lie in (0, 10], got {budget!r}"
        )


#: A set of records as tensors on the module's device: ``(inputs, labels)``.
_InputsLabels = tuple[torch.Tensor, torch.Tensor]


class _Stream:
    """Seeded, shuffled mini-batches of ``(X, y)``, cycling through passes."""

    def __init__(
        self, X: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> None:
        self.X, self.y, self.batch_size, self.generator = X, y, batch_size, generator
        self._order: torch.Tensor | None = None
        self._at = 0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next batch ``(X, y, positions)``."""
        n = len(self)
        if self._order is None or self._at >= n:
            self._order = torch.randperm(n, generator=self.generator).to(self.X.device)
            self._at = 0
        index = self._order[self._at : self._at + self.batch_size]
        self._at += self.batch_size
        return self.X[index], self.y[index], index


def _seed_generators(seed: int, counter: int) -> tuple[np.random.Generator, torch.Generator]:
    sequence = np.random.SeedSequence([int(seed), int(counter)])
    rng = np.random.default_rng(sequence)
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    return rng, generator
