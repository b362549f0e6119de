"""The op registry: every op nnspec knows, each declared once as a pydantic model.

Importing this package registers all ops in `OPS` (name -> model class).
"""

from . import activations, attention, elementwise, layers, norms, sequence, shaping, spatial, tensor
from .base import FAMILIES, OPS, VARIADIC, Op

__all__ = ["FAMILIES", "OPS", "VARIADIC", "Op"]

_ = (activations, attention, elementwise, layers, norms, sequence, shaping, spatial, tensor)  # imported for their registrations
