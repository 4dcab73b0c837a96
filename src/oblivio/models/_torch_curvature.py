"""Second-order derivatives of :class:`~oblivio.models.TorchModel`'s objective.

:class:`CurvatureMixin` (a part of ``TorchModel``) holds the Hessian-vector products
(forward-over-reverse ``torch.func``, with a reverse-over-reverse fallback), the dense
Hessian built from them, and its closed form when ``theta`` is the last linear layer.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import grad, jvp, vjp, vmap

from oblivio.data import Dataset

__all__ = ["CurvatureMixin"]

#: Largest number of parameters ``hessian`` agrees to materialise densely.
DENSE_HESSIAN_LIMIT = 5000
#: Entries of the per-record curvature-times-features tensor that the last-layer Hessian
#: forms at once (``_linear_head_hessian``): about 64 MiB in float32.
_HEAD_PIECE = 2**24


class CurvatureMixin:
    """Hessian-vector products and dense Hessians (a part of :class:`TorchModel`)."""

    def _batch_hvp(self, flat, v, x, y) -> torch.Tensor:
        gradient = grad(self._batch_loss)
        if self._hvp_mode == "forward":
            try:
                with warnings.catch_warnings():
                    # torch's forward-mode machinery scripts a helper on first use
                    warnings.filterwarnings("ignore", r".*torch\.jit\.script", DeprecationWarning)
                    return jvp(lambda t: gradient(t, x, y), (flat,), (v,))[1]
            except (NotImplementedError, RuntimeError) as error:
                if "forward" not in str(error).lower() and "jvp" not in str(error).lower():
                    raise
                self._hvp_mode = "reverse"  # e.g. an op with no forward-mode derivative
        _, pullback = vjp(lambda t: gradient(t, x, y), flat)
        return pullback(v)[0]

    def hvp(self, data: Dataset, v: Any, theta: Any = None) -> torch.Tensor:
        """Hessian-vector product of the objective: ``(sum_i H_i + l2 * n * I) v``.

        Forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``), batched over the
        data; evaluation mode.
        """
        flat = self._as_theta(theta).detach()
        vec = (
            torch.as_tensor(v if isinstance(v, torch.Tensor) else np.array(v))
            .detach()
            .to(device=flat.device, dtype=flat.dtype)
            .reshape(-1)
        )
        if vec.numel() != flat.numel():
            raise ValueError(f"v must have {flat.numel()} entries, got {vec.numel()}")
        total = self.l2 * len(data) * vec
        with self._eval():
            for xb, yb in self._batches(data, self.eval_batch_size):
                total = total + self._batch_hvp(flat, vec, xb, yb).detach()
        return total

    def hessian(self, data: Dataset, theta: Any = None, *, chunk: int = 64) -> torch.Tensor:
        """Dense Hessian of the objective (``p x p``; refuses more than 5000 parameters).

        Built from Hessian-vector products of ``chunk`` basis vectors at a time, then
        symmetrised; when ``theta`` is the weight and bias of the layer that outputs the
        logits (``params=[net.head_name]``), in closed form from one forward pass instead
        (``_linear_head_hessian``; the same matrix, to rounding).
        """
        flat = self._as_theta(theta).detach()
        p = flat.numel()
        if p > DENSE_HESSIAN_LIMIT:
            raise ValueError(
                f"a dense Hessian of {p} parameters is too large (limit "
                f"{DENSE_HESSIAN_LIMIT}); use hvp() with an iterative solver, or restrict "
                "theta with params=[...]"
            )
        eye = torch.eye(p, dtype=flat.dtype, device=flat.device)
        head_hessian = self._linear_head_hessian(data, flat)
        if head_hessian is not None:
            return head_hessian + self.l2 * len(data) * eye
        H = self.l2 * len(data) * eye
        with self._eval():
            for xb, yb in self._batches(data, self.eval_batch_size):
                for start in range(0, p, chunk):
                    block = eye[start : start + chunk]
                    H[start : start + chunk] += self._batch_hvps(flat, block, xb, yb)
        return 0.5 * (H + H.T)

    def _linear_head(self) -> nn.Linear | None:
        """The ``nn.Linear`` whose weight (and bias) are all of ``theta``, or None."""
        if callable(self.loss_fn):
            return None
        module = self._check_fitted()
        for name, sub in module.named_modules():
            if not isinstance(sub, nn.Linear):
                continue
            own = [f"{name}.{n}" if name else n for n, _ in sub.named_parameters()]
            if own == list(self._names_):
                return sub
        return None

    def _linear_head_hessian(self, data: Dataset, flat: torch.Tensor) -> torch.Tensor | None:
        """The data term of :meth:`hessian` in closed form when ``theta`` is the weight and
        bias of the layer whose output is the module's (the last-layer setting of the
        influence methods), else None.

        The logits ``z = W phi + b`` are then linear in ``theta`` and the features ``phi``
        do not depend on it, so the Hessian of the summed cross-entropy is exactly
        ``sum_i (diag(p_i) - p_i p_i^T) (x) [phi_i; 1][phi_i; 1]^T``: one forward pass over
        the data and a matrix product per batch, where Hessian-vector products re-run the
        whole network for every block of ``chunk`` basis vectors (a 60,000-image CNN's head,
        1,290 parameters: minutes on a CPU).
        """
        head = self._linear_head()
        if head is None:
            return None
        parts = self._unflatten(flat)
        weight = parts[self._names_[0]]
        n_out, n_in = weight.shape
        bias = parts[self._names_[1]] if head.bias is not None else None
        width = n_in + (bias is not None)
        H = torch.zeros(n_out * width, n_out * width, dtype=flat.dtype, device=flat.device)
        captured: dict[str, torch.Tensor] = {}

        def keep(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            captured["phi"], captured["z"] = inputs[0], output

        with self._eval() as module, torch.no_grad():
            handle = head.register_forward_hook(keep)
            try:
                for xb, _ in self._batches(data, self.eval_batch_size):
                    out = module(xb)
                    if out is not captured.get("z"):  # something acts after the layer
                        return None
                    phi = captured["phi"].reshape(out.shape[0], -1).to(flat.dtype)
                    z = phi @ weight.T + (0 if bias is None else bias)
                    prob = torch.softmax(z, dim=1)
                    curvature = torch.diag_embed(prob) - prob[:, :, None] * prob[:, None, :]
                    if bias is not None:
                        phi = torch.cat([phi, torch.ones_like(phi[:, :1])], dim=1)
                    # H[(c, j), (e, k)] += sum_b A_b[c, e] phi_b[j] phi_b[k], over pieces of
                    # the batch whose (b, c, e, k) product stays near _HEAD_PIECE entries
                    rows = max(1, _HEAD_PIECE // (n_out * n_out * width))
                    for start in range(0, phi.shape[0], rows):
                        part, bend = phi[start : start + rows], curvature[start : start + rows]
                        left = bend[:, :, :, None] * part[:, None, None, :]  # b, c, e, k
                        block = part.T @ left.reshape(part.shape[0], -1)  # j, (c, e, k)
                        block = block.reshape(width, n_out, n_out, width).permute(1, 0, 2, 3)
                        H += block.reshape(n_out * width, n_out * width)
            finally:
                handle.remove()
        # augmented order (class, feature-or-1) -> theta's order (weight row-major, bias)
        position = torch.arange(n_out * width, device=flat.device).view(n_out, width)
        order = position[:, :n_in].reshape(-1)
        if bias is not None:
            order = torch.cat([order, position[:, n_in]])
        H = H[order][:, order]
        return 0.5 * (H + H.T)

    def _batch_hvps(self, flat, block, x, y) -> torch.Tensor:
        """Hessian-vector products of one batch's loss with each row of ``block``."""
        try:
            if self._hvp_mode == "forward":
                return vmap(lambda e: self._batch_hvp(flat, e, x, y))(block).detach()
            _, pullback = vjp(lambda t: grad(self._batch_loss)(t, x, y), flat)
            return vmap(pullback)(block)[0].detach()
        except (NotImplementedError, RuntimeError):
            pass  # an op without a batching or forward rule: one vector at a time
        return torch.stack([self._batch_hvp(flat, e, x, y).detach() for e in block])
