"""`make demo`: every spec in specs/ validated, summarised, built, exported, checked and drawn.

For each spec: load + check (all signatures), a summary into out/<name>.summary.txt, the
PyTorch module (torch.fx) and its standalone source out/<name>_model.py, the ONNX model
out/<name>.onnx emitted from the module's weights, parity of onnxruntime against PyTorch on
random inputs, and the diagram out/<name>.svg. A table of what was measured closes the run;
the exit status is 1 if any step failed.

Run: .venv/bin/python scripts/demo.py [--set key=value ...] [--only NAME]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnspec.builder import SpecError, check_spec, load_spec, param_count  # noqa: E402
from nnspec.builder.params import parse_override  # noqa: E402
from nnspec.builder.summary import summary_rows  # noqa: E402

OUT = ROOT / "out"
SIZES = {"batch": 2, "seq": 8, "src_len": 7, "tgt_len": 5, "height": 64, "width": 64}
REDUCED: dict[str, dict[str, Any]] = {
    "llama": {"vocab_size": 1000, "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2},
    "vit_b16": {"num_layers": 2, "num_heads": 3, "hidden_dim": 192, "mlp_dim": 768,  # ViT-Ti widths
                "head_init": "normal(std=0.02)"},  # a zero head (torchvision's) would make parity 0 trivially
    "mobilenet_v2": {"conv_init": "kaiming_normal(mode=fan_in)"},  # torchvision's fan_out gives outputs ~1e-9
    "unet": {"height": 64, "width": 96},
}
"""Smaller inputs (or widths) for the zoo's heavy specs, so that the demo stays fast; `--set` still wins."""


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def _summary_text(graph: Any) -> str:
    rows = summary_rows(graph)
    width = max(len(r.id) for r in rows) + 2
    lines = [f"{'node':<{width}}{'op':<22}{'output shape':<44}{'params':>14}"]
    lines += [f"{r.id:<{width}}{r.op:<22}{r.shape:<44}{r.params:>14,}" for r in rows]
    lines.append(f"total parameters: {param_count(graph):,}")
    return "\n".join(lines) + "\n"


def demo_one(path: Path, overrides: dict[str, Any]) -> dict[str, str]:
    import torch

    from nnspec.backends.graphviz import render
    from nnspec.backends.onnx import export_onnx
    from nnspec.backends.onnx.commands import compare
    from nnspec.backends.pytorch import emit_python, to_torch

    row: dict[str, str] = {"spec": path.stem}
    spec = load_spec(path, overrides)
    (graphs, _), t = _timed(lambda: check_spec(spec))
    graph = graphs[None]
    row["nodes"] = f"{len(graph)}"
    row["params"] = f"{param_count(graph):,}"
    row["check ms"] = f"{t * 1e3:.1f}"
    (OUT / f"{path.stem}.summary.txt").write_text(_summary_text(graph))

    torch.manual_seed(0)
    module, t = _timed(lambda: to_torch(spec).eval())
    row["torch build s"] = f"{t:.2f}"
    (OUT / f"{path.stem}_model.py").write_text(emit_python(graph))

    state = module.state_dict()
    _, t = _timed(lambda: export_onnx(graph, OUT / f"{path.stem}.onnx", state))
    row["onnx export s"] = f"{t:.2f}"

    diffs, _ = _timed(lambda: compare(graph, SIZES, seed=0))
    worst = max(d["diff"] / d["scale"] for d in diffs.values())
    row["parity (rel. max diff)"] = f"{worst:.1e}" + (" ok" if worst <= 1e-4 else " FAIL")

    render(graph, OUT / f"{path.stem}.svg", depth=1)
    row["diagram"] = f"out/{path.stem}.svg"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override a param in every spec")
    parser.add_argument("--only", action="append", default=[], help="run only these spec names")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    rows: list[dict[str, str]] = []
    failed = False
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        if args.only and path.stem not in args.only:
            continue
        spec_overrides = dict(REDUCED.get(path.stem, {}))
        for item in args.sets:
            key, value = parse_override(item)
            if key in load_spec(path).params:
                spec_overrides[key] = value
        print(f"== {path.relative_to(ROOT)}", flush=True)
        try:
            rows.append(demo_one(path, spec_overrides))
        except SpecError as exc:
            failed = True
            print(exc, file=sys.stderr)
            rows.append({"spec": path.stem, "nodes": "invalid"})
        except Exception:  # a failed step is reported in the table and fails the run
            failed = True
            traceback.print_exc()
            rows.append({"spec": path.stem, "nodes": "error (see above)"})
        failed = failed or "FAIL" in rows[-1].get("parity (rel. max diff)", "")
    columns = ["spec", "nodes", "params", "check ms", "torch build s", "onnx export s", "parity (rel. max diff)",
               "diagram"]
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in columns}
    print()
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(r.get(c, "-").ljust(widths[c]) for c in columns))
    print(f"\noutputs in {OUT.relative_to(ROOT)}/ (summaries, standalone PyTorch sources, ONNX models, diagrams)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
