"""Linear algebra for unlearning: inverse-Hessian-vector products and spectral norms.

Pure functions on tensors/arrays and Hessian-vector-product callables; no model code.
"""

__all__: list[str] = []
