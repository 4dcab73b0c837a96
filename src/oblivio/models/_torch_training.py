"""The training loop of :class:`~oblivio.models.TorchModel`.

:class:`TrainingMixin` (a part of ``TorchModel``) checks the module's output width and
runs seeded mini-batch Adam or SGD on the mean-convention objective; ``_progress`` reports
the steps. ``TorchModel.fit`` prepares the module and calls it.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from oblivio import _progress as _progress_utility
from oblivio.data import Dataset

__all__ = ["TrainingMixin"]


class TrainingMixin:
    """Optimiser construction and the mini-batch loop (a part of :class:`TorchModel`)."""

    def _check_outputs(self, data: Dataset) -> None:
        with torch.no_grad(), self._eval() as module:
            x, _ = next(self._batches(data.take(np.arange(min(2, len(data)))), 2))
            width = module(x).shape[-1]
        if self.loss_fn == "cross_entropy" and width != data.n_classes:
            raise ValueError(
                f"{type(module).__name__} outputs {width} logits but the data has "
                f"{data.n_classes} classes; build the module with n_classes={data.n_classes}"
            )

    def _train(self, module: nn.Module, data: Dataset, n_epochs: int) -> None:
        if n_epochs == 0:
            return
        lookup = dict(module.named_parameters())
        trained = [lookup[n] for n in self._names_]
        if self.train_all:
            trained += [
                p
                for p in module.parameters()
                if p.requires_grad and all(p is not q for q in trained)
            ]
        everything = list(module.parameters())
        flags = [p.requires_grad for p in everything]
        for p in everything:
            p.requires_grad_(any(p is q for q in trained))
        if self.optimizer == "adam":
            opt = torch.optim.Adam(trained, lr=self.lr)
        else:
            opt = torch.optim.SGD(trained, lr=self.lr, momentum=self.momentum)
        dtype = self._float_dtype(module)
        device = self._device()
        X = self._to_tensor(data.X, dtype) if not sp.issparse(data.X) else data.X
        y = torch.from_numpy(np.array(data.y, dtype=np.int64)).to(device)
        n = len(data)
        generator = torch.Generator().manual_seed(int(self.seed))
        progress = _progress(self.verbose, n_epochs, math.ceil(n / self.batch_size))
        module.train()
        try:
            with progress as bar:
                for _epoch in range(n_epochs):
                    order = torch.randperm(n, generator=generator)
                    for start in range(0, n, self.batch_size):
                        index = order[start : start + self.batch_size]
                        if sp.issparse(X):
                            xb = self._to_tensor(X[index.numpy()], dtype)
                        else:
                            xb = X[index.to(X.device)]
                        yb = y[index.to(device)]
                        opt.zero_grad(set_to_none=True)
                        objective = self._per_record(module(xb), yb).mean()
                        if self.l2:
                            objective = objective + 0.5 * self.l2 * sum(
                                torch.sum(p * p) for p in trained
                            )
                        objective.backward()
                        opt.step()
                        bar.advance(
                            note=f"loss {objective.item():.4f}" if bar.mode != "off" else None
                        )
        finally:
            module.eval()
            for p, flag in zip(everything, flags, strict=True):
                p.requires_grad_(flag)
            module.zero_grad(set_to_none=True)


def _progress(verbose: bool, epochs: int, steps: int) -> _progress_utility.Task:
    """Training steps through the shared reporter: shown with ``verbose=True`` or when the
    command line asked for progress (a bar on a terminal, plain lines in a log)."""
    return _progress_utility.task(
        f"training ({epochs} epochs)", total=epochs * steps, force=verbose
    )
