"""Test setup: the op-case table is importable as `op_cases`; specs are found from the repo root."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
os.chdir(ROOT)
