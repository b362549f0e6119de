"""The PyTorch backend's lowering table type: the one all backends share (`nnspec.backends.table`).

Registration is explicit (``@TABLE.register("linear")``), checked against the live `builder.OPS`.
"""

from __future__ import annotations

from nnspec.backends.table import LoweringTable, MissingLoweringError

__all__ = ["LoweringTable", "MissingLoweringError"]
