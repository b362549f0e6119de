"""Random mutations of the seed specs never crash the CLI, never hang, and never leave a file.

The mutations (tests/mutations.py) delete and add keys, swap value types, rename references,
set odd scalars and params, and damage the text (random bytes, dropped lines, truncation).
Whatever arrives, `nnspec validate` answers with exit status 0 or 1 and no traceback, within
`TIME_BOUND` seconds; `nnspec render`, `export` and `build --emit-python` (those that exist)
write their file when they succeed and nothing when they fail. scripts/fuzz.py runs the
same cases for a fixed budget.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutations import SEEDS, SMALL_SEEDS, available_writers, data_case, run_case, text_case


def _fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(outcome_problems: list[str], case: object) -> None:
    assert not outcome_problems, f"{case}\n" + "\n".join(outcome_problems)


@_fuzz(100)
@given(st.sampled_from(sorted(SEEDS)), st.randoms(use_true_random=False))
def test_data_mutations_are_answered(seed: str, rng: random.Random) -> None:
    case = data_case(rng, seed)
    with tempfile.TemporaryDirectory() as tmp:
        _check(run_case(case, Path(tmp)).problems, case)


@_fuzz(100)
@given(st.sampled_from(sorted(SEEDS)), st.randoms(use_true_random=False))
def test_text_mutations_are_answered(seed: str, rng: random.Random) -> None:
    case = text_case(rng, seed)
    with tempfile.TemporaryDirectory() as tmp:
        _check(run_case(case, Path(tmp)).problems, case)


@_fuzz(30)
@given(st.sampled_from(SMALL_SEEDS), st.booleans(), st.randoms(use_true_random=False))
def test_failed_commands_write_nothing(seed: str, as_text: bool, rng: random.Random) -> None:
    case = text_case(rng, seed) if as_text else data_case(rng, seed)
    with tempfile.TemporaryDirectory() as tmp:
        _check(run_case(case, Path(tmp), available_writers()).problems, case)
