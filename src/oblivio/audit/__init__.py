"""Audits: metrics against retraining, membership inference, exposure."""

from oblivio.audit.metrics import accuracy, agreement, gradient_residual, param_distance

__all__ = ["accuracy", "agreement", "gradient_residual", "param_distance"]
