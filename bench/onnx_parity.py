"""Export every seed spec (main graph and each signature) to ONNX and report parity with the
PyTorch backend: the largest |onnxruntime - PyTorch| over several sizes of every symbolic dim.

    .venv/bin/python bench/onnx_parity.py [--out DIR] [--small] [--specs gpt bert] [--json]

With --out the .onnx files are kept there (``<spec>.onnx``, ``<spec>.<signature>.onnx``).
--small scales the large specs down (the sizes the tests use) for a quick run.
Exit status 1 if some output is above the tolerance, 1e-4 x max(1, max |PyTorch output|).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from op_cases import SMALL_SPECS  # noqa: E402

from nnspec.backends.onnx.commands import TOLERANCE, compare  # noqa: E402
from nnspec.backends.onnx.writer import export_onnx  # noqa: E402
from nnspec.builder import compile_graph, graph_inputs, load_spec  # noqa: E402

SIZES = (1, 4, 9)


def parity(name: str, out: Path, small: bool) -> list[dict[str, Any]]:
    spec = load_spec(ROOT / "specs" / f"{name}.yaml", SMALL_SPECS.get(name, {}) if small else None)
    rows = []
    for sig in (None, *spec.signatures):
        g = compile_graph(spec, sig)
        path = out / (f"{name}.onnx" if sig is None else f"{name}.{sig}.onnx")
        t0 = time.perf_counter()
        files = export_onnx(g, path)
        t_export = time.perf_counter() - t0
        symbols = sorted({s for t in graph_inputs(g).values() for s in t.symbols})
        worst, worst_rel, ok = 0.0, 0.0, True
        for size in SIZES:
            for r in compare(g, dict.fromkeys(symbols, size)).values():
                worst = max(worst, r["diff"])
                worst_rel = max(worst_rel, r["diff"] / r["scale"])
                ok = ok and r["diff"] <= TOLERANCE * r["scale"]
        rows.append({"spec": name, "graph": sig or "main", "onnx MB": sum(f.stat().st_size for f in files) / 1e6,
                     "export s": t_export, "sizes": f"{','.join(symbols) or '-'} in {SIZES}",
                     "max |diff|": worst, "max |diff| / scale": worst_rel, "ok": ok})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", nargs="*", default=sorted(p.stem for p in (ROOT / "specs").glob("*.yaml")))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        rows = [row for name in args.specs for row in parity(name, out, args.small)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        cols = list(rows[0])
        cells = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
