"""Fuzz the CLI with mutated seed specs and hostile non-spec inputs for a fixed budget; for CI.

    python scripts/fuzz.py --cases 3000 --seed 1                  # spec cases
    python scripts/fuzz.py --cases 0 --hostile 1000 --seed 1      # ONNX, .npy, weights, values, paths

A spec case is a seed spec mutated as data or as text (tests/mutations.py, shared with the
hypothesis tests); a failure is a traceback, an exit status other than 0 or 1, a command over
the time bound, or a failed command that left a file. A hostile case (tests/hostile_inputs.py)
is an ONNX file, a ``.npy`` input, a safetensors file, a ``--set``/``--dim``/``--limit`` value
or an output path made to break nnspec; a failure is an exit status other than 0, 1 or 2, an
internal error, a command over the time bound, a temporary file left, or a file written or
changed outside the target. Case i of seed s is the same on every run: ``--seed s --only i``
(``--only-hostile i``) replays it, ``--keep DIR`` saves failing specs. Exit status 1 when any
case failed.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hostile_inputs import hostile_case, run_hostile
from mutations import SEEDS, SMALL_SEEDS, Case, available_writers, data_case, run_case, text_case


def make_case(seed: int, index: int, writers: bool) -> Case:
    """Case `index` of run `seed`: half data mutations, half text damage, over every seed spec
    (over the small ones when the writing commands run too)."""
    rng = random.Random(f"{seed}:{index}")
    spec = rng.choice(SMALL_SEEDS if writers else sorted(SEEDS))
    return data_case(rng, spec) if rng.random() < 0.5 else text_case(rng, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="how many cases to try (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    parser.add_argument("--only", type=int, default=None, metavar="I", help="replay case I alone")
    parser.add_argument("--writers", type=float, default=0.1, metavar="FRACTION",
                        help="fraction of cases also run through render/export/build (default 0.1)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="save failing specs here")
    parser.add_argument("--hostile", type=int, default=0, metavar="N",
                        help="also try N hostile non-spec cases: ONNX, .npy, weights, CLI values, output paths")
    parser.add_argument("--only-hostile", type=int, default=None, metavar="I", help="replay hostile case I alone")
    args = parser.parse_args()
    if args.only_hostile is not None:
        return 1 if run_hostile_cases(args.seed, [args.only_hostile]) else 0

    writers = available_writers()
    indices = [args.only] if args.only is not None else range(args.cases)
    failures = 0
    codes = {0: 0, 1: 0}
    start = time.monotonic()
    for i in indices:
        with_writers = random.Random(f"{args.seed}:{i}:writers").random() < args.writers
        case = make_case(args.seed, i, with_writers)
        with tempfile.TemporaryDirectory() as tmp:
            outcome = run_case(case, Path(tmp), writers if with_writers else [])
        codes[outcome.exit_code] = codes.get(outcome.exit_code, 0) + 1
        if outcome.problems:
            failures += 1
            print(f"FAIL case {i} (replay: --seed {args.seed} --only {i}): {case}")
            for problem in outcome.problems:
                print("  " + problem.replace("\n", "\n  "))
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"case{i}_{case.name}").write_bytes(case.text)
    elapsed = time.monotonic() - start
    print(f"cases tried: {len(indices)}, failures: {failures} (valid: {codes.get(0, 0)}, rejected: {codes.get(1, 0)}; "
          f"writers: {', '.join(writers) or 'none'}; {elapsed:.0f} s)")
    if args.only is None and args.hostile:
        failures += run_hostile_cases(args.seed, range(args.hostile))
    return 1 if failures else 0


def run_hostile_cases(seed: int, indices: range | list[int]) -> int:
    """Run hostile cases `indices` of run `seed`; print each failure and a summary; return the failures."""
    failures = 0
    families: dict[str, int] = {}
    start = time.monotonic()
    for i in indices:
        case = hostile_case(random.Random(f"hostile:{seed}:{i}"))
        families[case.family] = families.get(case.family, 0) + 1
        with tempfile.TemporaryDirectory() as tmp:
            problems = run_hostile(case, Path(tmp))
        if problems:
            failures += 1
            print(f"FAIL hostile case {i} (replay: --seed {seed} --only-hostile {i}): {case}")
            for problem in problems:
                print("  " + problem.replace("\n", "\n  "))
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(families.items()))
    print(f"hostile cases tried: {len(indices)}, failures: {failures} ({shown}; {time.monotonic() - start:.0f} s)")
    return failures


if __name__ == "__main__":
    sys.exit(main())
