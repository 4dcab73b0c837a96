"""A differentially private feature extractor for certified removal on learned features.

Guo et al., *Certified Data Removal from Machine Learning Models*, ICML 2020, Sec. 5 (SVHN):
the Newton removal certifies only a linear head. Features learned *on the private data*
must be covered too; an (eps_DP, delta_DP)-DP extractor is certified-removal with the
identity removal mechanism (DP implies CR), so it needs no update when records leave.
This module trains a small CNN with DP-SGD (Opacus, Abadi et al., CCS 2016; Renyi-DP
accounting, Mironov, CSF 2017), extracts L2-normalised features, and states how the
guarantees of the extractor and of :class:`~oblivio.unlearners.CertifiedRemoval` on top
combine (reference ``certified-removal.md`` §8).

Both the extractor and the training-time classification head are trained with DP-SGD
(the original code's "full private" mode): in its default mode the head was trained on
non-private gradients that flow into the extractor's updates, which a strict DP argument
does not cover (reference §8, pitfall 9). The head is discarded after training.

Requires the optional extra ``oblivio[dp]`` (``pip install opacus``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from oblivio.data import Dataset

__all__ = ["DPFeatureExtractor", "combined_guarantee", "default_extractor"]


def default_extractor(in_channels: int = 1, image_size: int = 28, filters: int = 16) -> nn.Module:
    """Conv-ReLU-MaxPool twice, flattened: the reference's SVHN extractor, scaled down.

    Only layers Opacus supports (no batch norm). Output: ``filters * (image_size // 4)^2``
    features.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, filters, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(filters, filters, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )


def combined_guarantee(
    epsilon_dp: float,
    delta_dp: float,
    epsilon_head: float,
    delta_head: float,
    n_removed: int,
) -> tuple[float, float]:
    """(epsilon, delta) for removing ``n_removed`` records from extractor + certified head.

    The extractor is (eps_DP, delta_DP)-DP, hence by group privacy (Dwork & Roth, 2014,
    Thm 2.2 and its (eps, delta) form) indistinguishable from one trained without the
    ``T = n_removed`` records up to ``(T eps_DP, T e^{(T-1) eps_DP} delta_DP)``. The head's
    certificate adds its ``(epsilon, delta)`` by basic composition. Guo et al. state
    the combination informally ("the number of certifiably removed training points is
    limited by the DP feature extractor"); this is the standard conservative composition.
    """
    if n_removed < 0:
        raise ValueError(f"n_removed must be >= 0, got {n_removed!r}")
    if n_removed == 0:
        return float(epsilon_head), float(delta_head)
    T = int(n_removed)
    epsilon = T * epsilon_dp + epsilon_head
    delta = T * math.exp((T - 1) * epsilon_dp) * delta_dp + delta_head
    return float(epsilon), float(delta)


class DPFeatureExtractor:
    """Train a CNN feature extractor with DP-SGD; extract L2-normalised features.

    Parameters
    ----------
    module : nn.Module, optional
        The extractor (input -> flat features). Default: :func:`default_extractor` for the
        data's image shape.
    image_shape : tuple of int, optional
        ``(channels, height, width)`` to reshape flat rows into (e.g. ``(1, 8, 8)`` for the
        digits). Taken from ``X`` when it is 4-d.
    epochs, batch_size, lr : training options (Adam). ``batch_size`` is the expected
        Poisson batch size (sampling rate ``batch_size / n``).
    noise_multiplier : float
        sigma_DP: standard deviation of the Gaussian noise relative to ``max_grad_norm``
        (the reference's SVHN run uses 6).
    max_grad_norm : float
        Per-example gradient clipping norm (the reference uses 4).
    delta : float
        delta_DP at which ``epsilon_`` is reported.
    seed : int
        Seeds initialisation, batch sampling and the DP noise.

    Attributes
    ----------
    extractor_ : nn.Module
        The trained extractor.
    epsilon_ : float
        eps_DP of the whole training run at ``delta`` (Renyi-DP accountant).

    Notes
    -----
    The DP noise comes from torch's seeded generator (Opacus with ``secure_mode=False``,
    which warns so): reproducible, and what experiments and audits of the accounting need;
    a deployment whose guarantee must hold against an attacker who can predict the noise
    needs a cryptographically secure generator (Opacus' ``secure_mode``, which requires the
    ``torchcsprng`` package).
    """

    def __init__(
        self,
        module: nn.Module | None = None,
        *,
        image_shape: tuple[int, int, int] | None = None,
        epochs: int = 5,
        batch_size: int = 256,
        lr: float = 1e-3,
        noise_multiplier: float = 6.0,
        max_grad_norm: float = 4.0,
        delta: float = 1e-5,
        seed: int = 0,
    ) -> None:
        self.module = module
        self.image_shape = image_shape
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.delta = delta
        self.seed = seed

    def _images(self, data: Dataset) -> torch.Tensor:
        X = data.dense() if hasattr(data, "dense") else np.asarray(data.X)
        X = np.array(X, dtype=np.float32)  # a writable copy for torch
        if X.ndim == 4:
            return torch.from_numpy(X)
        shape = self.image_shape
        if shape is None:
            if X.ndim == 3:
                return torch.from_numpy(X[:, None])
            side = int(round(math.sqrt(X.shape[1])))
            if side * side != X.shape[1]:
                raise ValueError(
                    f"cannot infer an image shape for {X.shape[1]} features; pass image_shape"
                )
            shape = (1, side, side)
        return torch.from_numpy(X.reshape((len(X), *shape)))

    def fit(self, data: Dataset) -> DPFeatureExtractor:
        """Train extractor and a linear head with DP-SGD on ``data``; discard the head."""
        try:
            from opacus import PrivacyEngine
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "DPFeatureExtractor needs Opacus: pip install 'oblivio[dp]'"
            ) from error
        if not (self.noise_multiplier > 0 and self.max_grad_norm > 0):
            raise ValueError(
                f"noise_multiplier and max_grad_norm must be positive, got "
                f"{self.noise_multiplier!r} and {self.max_grad_norm!r}"
            )
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta!r}")
        torch.manual_seed(self.seed)
        images = self._images(data)
        labels = torch.from_numpy(np.array(data.y, dtype=np.int64))
        extractor = (
            self.module
            if self.module is not None
            else default_extractor(images.shape[1], images.shape[2])
        )
        with torch.no_grad():
            n_features = int(extractor(images[:1]).shape[1])
        head = nn.Linear(n_features, data.n_classes)
        network = nn.Sequential(extractor, head)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(images, labels),
            batch_size=min(self.batch_size, len(data)),
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
        )
        engine = PrivacyEngine(accountant="rdp")
        private, optimizer, loader = engine.make_private(
            module=network,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            poisson_sampling=True,
        )
        loss_fn = nn.CrossEntropyLoss()
        private.train()
        for _ in range(self.epochs):
            for batch_x, batch_y in loader:
                if len(batch_y) == 0:
                    continue
                optimizer.zero_grad()
                loss_fn(private(batch_x), batch_y).backward()
                optimizer.step()
        self.epsilon_ = float(engine.get_epsilon(self.delta))
        self.n_features_ = n_features
        self.extractor_ = extractor.eval()
        return self

    def transform(self, data: Dataset, batch_size: int = 1024) -> Dataset:
        """Features of ``data`` as a new Dataset (same ids, labels), rows of unit norm."""
        if not hasattr(self, "extractor_"):
            raise RuntimeError("DPFeatureExtractor is not fitted; call fit(data) first")
        images = self._images(data)
        parts = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                parts.append(self.extractor_(images[start : start + batch_size]).double())
        features = torch.cat(parts).numpy() if parts else np.zeros((0, self.n_features_))
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        features = features / np.where(norms > 0, norms, 1.0)
        return Dataset(
            X=features,
            y=data.y,
            ids=data.ids,
            classes=data.classes,
            name=f"{data.name}-dp-features",
        )

    def guarantee(self, certificate: Any, n_removed: int) -> tuple[float, float]:
        """Combined (epsilon, delta) after ``n_removed`` removals certified by ``certificate``.

        ``certificate`` is a :class:`~oblivio.unlearners.Certificate` (or anything with
        ``epsilon`` and ``delta``); see :func:`combined_guarantee`.
        """
        return combined_guarantee(
            self.epsilon_, self.delta, certificate.epsilon, certificate.delta, n_removed
        )
