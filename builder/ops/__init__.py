"""The op registry: every op nnspec knows, each declared once as a pydantic model.

Importing this package registers all ops in `OPS` (name -> model class).
"""

from . import activations, attention, layers, sequence, tensor
from .base import FAMILIES, OPS, VARIADIC, Op

__all__ = ["FAMILIES", "OPS", "VARIADIC", "Op"]

_ = (activations, attention, layers, sequence, tensor)  # imported for their registrations
