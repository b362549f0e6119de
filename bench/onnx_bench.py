"""The ONNX backend against torch.onnx.export, per seed spec, as ratios measured in one run.

    .venv/bin/python bench/onnx_bench.py [--specs bert gpt] [--skip-dynamo] [--repeat 3] [--json out.json]
    .venv/bin/python bench/onnx_bench.py --structure-only     # table 2 alone: no torch, a few seconds

Tables:

1. export: nnspec's ``to_onnx`` + ``save_onnx`` (in memory, then written) and ``export_onnx``
   (streamed to the file), against ``torch.onnx.export`` of the PyTorch module (TorchScript
   exporter in this process; dynamo exporter in a fresh process per spec, as a CLI user pays
   it, first-call costs included) and against safetensors writing the same weights (the floor);
   the three nnspec/safetensors writes are timed in turns, best of ``--repeat``.
2. structure: the checked graph to its ModelProto without weights (``lower_graph`` then
   ``light_model``), ms per 1000 nnspec nodes and per 1000 ONNX nodes, best of
   ``--structure-repeat`` runs, on the seed specs and on a 100-layer GPT; load+check (the
   spec to the checked graph) is timed apart.
3. latency: onnxruntime (CPU, ORT_ENABLE_ALL) on our file, on the file torch.onnx.export wrote,
   and on our file with the opset-20/23 native Gelu and Attention, timed in interleaved rounds;
   PyTorch eager for reference; batch 1 and 16, medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from nnspec.backends.onnx import export_onnx, random_inputs, save_onnx, session, to_onnx  # noqa: E402
from nnspec.backends.onnx.export import light_model, lower_graph  # noqa: E402
from nnspec.backends.onnx.lowering import Options  # noqa: E402
from nnspec.backends.onnx.opsets import default_opset  # noqa: E402
from nnspec.builder import compile_graph, graph_inputs, load_spec  # noqa: E402

SPECS = ["lenet5", "rnn_intent", "lstm_sentiment", "lstm_seq2seq", "transformer", "bert", "gpt"]
DIMS: dict[str, dict[str, int]] = {
    "lenet5": {}, "rnn_intent": {"seq": 32}, "lstm_sentiment": {"seq": 64},
    "lstm_seq2seq": {"src_len": 16, "tgt_len": 16}, "transformer": {"src_len": 32, "tgt_len": 32},
    "bert": {"seq": 64}, "gpt": {"seq": 64},
}
"""Sequence lengths for the latency runs (batch comes from --batches)."""


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def best(fn: Callable[[], Any], repeat: int) -> float:
    return min(timed(fn)[0] for _ in range(repeat))


def latency(fn: Callable[[], Any], budget: float = 1.5, min_runs: int = 5) -> float:
    """Median seconds per call after warm-up, over about `budget` seconds."""
    for _ in range(2):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < budget:
        times.append(timed(fn)[0])
        if len(times) >= 200:
            break
    return statistics.median(times)


# -- torch.onnx.export ----------------------------------------------------------------------


def _torch_args(graph: Any, feed: dict[str, np.ndarray]) -> tuple[list[str], tuple[Any, ...]]:
    import torch

    names = list(graph.graph["inputs"])
    return names, tuple(torch.from_numpy(feed[n]) for n in names)


def torch_export(module: Any, graph: Any, path: Path, dynamo: bool) -> float:
    """Seconds for torch.onnx.export of `module`, symbolic dims dynamic; raises when the exporter fails."""
    import torch

    feed = random_inputs(to_onnx(graph, opset=None), {s: 3 for t in graph_inputs(graph).values() for s in t.symbols})
    names, args = _torch_args(graph, feed)
    outputs = list(graph.graph["outputs"])
    types = graph_inputs(graph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims: dict[str, Any] = {}
            shapes = [{i: dims.setdefault(str(d), torch.export.Dim(str(d), min=2)) for i, d in enumerate(types[n].shape)
                       if not d.is_Integer} or None for n in names]
            t, _ = timed(lambda: torch.onnx.export(module, args, str(path), dynamo=True, input_names=names,
                                                   output_names=outputs, dynamic_shapes=tuple(shapes),
                                                   verbose=False))
        else:
            axes = {n: {i: str(d) for i, d in enumerate(types[n].shape) if not d.is_Integer} for n in names}
            t, _ = timed(lambda: torch.onnx.export(module, args, str(path), dynamo=False, input_names=names,
                                                   output_names=outputs, dynamic_axes=axes))
    return t


def dynamo_child(name: str, path: str) -> None:
    """In a fresh process: build the module, then time the dynamo exporter's first call."""
    import torch

    from nnspec.backends.pytorch import to_torch

    torch.manual_seed(0)
    graph = compile_graph(load_spec(ROOT / "specs" / f"{name}.yaml"))
    module = to_torch(graph).eval()
    try:
        seconds = torch_export(module, graph, Path(path), dynamo=True)
        print(json.dumps({"ok": True, "s": seconds}))
    except Exception as exc:  # the exporter's failures have many types
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}))


def dynamo_fresh(name: str, path: Path) -> dict[str, Any]:
    run = subprocess.run([sys.executable, __file__, "--_dynamo-child", name, str(path)], capture_output=True,
                         text=True, cwd=ROOT, check=False)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": (run.stderr.strip().splitlines() or ["no output"])[-1][:160]}
    return dict(json.loads(lines[-1]))


# -- the tables -----------------------------------------------------------------------------


def export_row(name: str, repeat: int, skip_dynamo: bool, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch
    from safetensors.torch import save_file

    from nnspec.backends.pytorch import to_torch

    torch.manual_seed(0)
    graph = compile_graph(load_spec(ROOT / "specs" / f"{name}.yaml"))
    module = to_torch(graph).eval()
    state = module.state_dict()
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    ours = tmp / f"{name}.onnx"
    calls: dict[str, Callable[[], Any]] = {
        "mem": lambda: save_onnx(to_onnx(graph, state), ours),
        "stream": lambda: export_onnx(graph, ours, state),
        "floor": lambda: save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "w.safetensors")),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeat):  # in turns, so that load from elsewhere and the disk's moods fall on all three
        for key, fn in calls.items():
            times[key].append(timed(fn)[0])
    t_mem, t_stream, t_floor = (min(times[k]) for k in calls)
    row: dict[str, Any] = {"spec": name, "MB": nbytes / 1e6, "nnspec s": t_mem, "nnspec stream s": t_stream,
                           "safetensors s": t_floor}
    files: dict[str, Any] = {"ours": ours, "graph": graph, "module": module}
    try:
        ts_path = tmp / f"{name}.ts.onnx"
        row["torchscript s"] = torch_export(module, graph, ts_path, dynamo=False)
        files["torchscript"] = ts_path
    except Exception as exc:  # report the failure, keep going
        row["torchscript s"] = f"fail: {type(exc).__name__}"
    if not skip_dynamo:
        dyn_path = tmp / f"{name}.dynamo.onnx"
        result = dynamo_fresh(name, dyn_path)
        row["dynamo s"] = result["s"] if result["ok"] else f"fail: {result['error'][:60]}"
        if result["ok"]:
            files["dynamo"] = dyn_path
    for key in ("torchscript s", "dynamo s"):
        if isinstance(row.get(key), float):
            row[f"{key.split()[0]} / stream"] = row[key] / t_stream
    row["stream / safetensors"] = t_stream / t_floor
    row["in memory / safetensors"] = t_mem / t_floor
    row["in memory / safetensors, median of turns"] = statistics.median(
        m / f for m, f in zip(times["mem"], times["floor"], strict=True))
    row["onnx bytes / state bytes"] = ours.stat().st_size / nbytes
    return row, files


DEEP_GPT = {"layers": 100, "d_model": 64, "heads": 4, "vocab": 100}
"""The 100-layer GPT of the structure table (the widths change no node, only weight sizes)."""


def structure_row(label: str, spec: Path, overrides: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Load+check of `spec`, then the checked graph to its weightless ModelProto, best of `repeat`."""
    t_check = best(lambda: compile_graph(load_spec(spec, overrides)), max(3, repeat // 4))
    graph = compile_graph(load_spec(spec, overrides))
    opts = Options(default_opset())
    t = best(lambda: light_model(lower_graph(graph, opts)), repeat)
    n_onnx = len(light_model(lower_graph(graph, opts)).graph.node)
    return {"graph": label, "nnspec nodes": len(graph), "onnx nodes": n_onnx, "load+check ms": t_check * 1e3,
            "ms": t * 1e3, "ms / 1000 nnspec nodes": t * 1e6 / len(graph), "ms / 1000 onnx nodes": t * 1e6 / n_onnx}


def structure_rows(specs: list[str], repeat: int) -> list[dict[str, Any]]:
    rows = [structure_row(name, ROOT / "specs" / f"{name}.yaml", {}, repeat) for name in specs]
    rows.append(structure_row("gpt, 100 layers", ROOT / "specs" / "gpt.yaml", DEEP_GPT, repeat))
    return rows


def interleaved(calls: dict[str, Callable[[], Any]], rounds: int = 7, budget: float = 0.3) -> dict[str, float]:
    """Median seconds per call of each candidate, timed in alternating rounds so that load from
    elsewhere on the machine falls on all of them alike."""
    for fn in calls.values():
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            start = time.perf_counter()
            while True:
                times[key].append(timed(fn)[0])
                if time.perf_counter() - start > budget and len(times[key]) >= 2:
                    break
    return {k: statistics.median(v) for k, v in times.items()}


def latency_rows(name: str, files: dict[str, Any], batches: list[int]) -> list[dict[str, Any]]:
    """PyTorch eager first, then every ONNX file in interleaved rounds (sessions without spinning
    threads, so that they do not steal each other's cores)."""
    import torch

    graph, module = files["graph"], files["module"]
    state = module.state_dict()
    candidates: dict[str, Any] = {"nnspec": to_onnx(graph, state)}
    native = to_onnx(graph, state, native_gelu=True, native_attention=True)
    if any(n.op_type in ("Gelu", "Attention") for n in native.graph.node):
        candidates["native"] = native
    candidates.update({k: files[k] for k in ("torchscript", "dynamo") if k in files})
    sessions = {k: session(m, spin=False) for k, m in candidates.items()}
    rows = []
    for batch in batches:
        feed = random_inputs(candidates["nnspec"], {"batch": batch, **DIMS.get(name, {})})
        row: dict[str, Any] = {"spec": name, "batch": batch}
        args = {k: torch.from_numpy(v) for k, v in feed.items()}
        with torch.no_grad():
            row["torch eager ms"] = latency(lambda a=args: module(**a)) * 1e3
        calls = {}
        for key, sess in sessions.items():
            mine = {i.name: feed[i.name] for i in sess.get_inputs()}
            try:
                sess.run(None, mine)
                calls[key] = lambda s=sess, f=mine: s.run(None, f)
            except Exception as exc:  # a torch-exported file that does not run at this size
                row[f"{key} ms"] = f"fail: {type(exc).__name__}"
        for key, t in interleaved(calls).items():
            row[f"{key} ms"] = t * 1e3
        for key in ("torchscript", "dynamo"):
            if isinstance(row.get(f"{key} ms"), float):
                row[f"nnspec / {key}"] = row["nnspec ms"] / row[f"{key} ms"]
        if isinstance(row.get("native ms"), float):
            row["native / nnspec"] = row["native ms"] / row["nnspec ms"]
        row["nnspec / eager"] = row["nnspec ms"] / row["torch eager ms"]
        rows.append(row)
    return rows


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", nargs="*", default=SPECS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 16])
    ap.add_argument("--skip-dynamo", action="store_true", help="Leave out the dynamo exporter (slow).")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--structure-only", action="store_true", help="Only the structure table (no torch).")
    ap.add_argument("--structure-repeat", type=int, default=20, help="Runs per structure timing (best counts).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the tables as JSON.")
    ap.add_argument("--_dynamo-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._dynamo_child:
        dynamo_child(*args._dynamo_child)
        return 0
    if args.structure_only:
        print_table("structure only (no weights)", structure_rows(args.specs, args.structure_repeat))
        return 0
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; opset {default_opset()}")
    exports, latencies = [], []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name in args.specs:
            row, files = export_row(name, args.repeat, args.skip_dynamo, tmp)
            exports.append(row)
            if not args.skip_latency:
                latencies += latency_rows(name, files, args.batches)
            print(f"  done {name}", file=sys.stderr, flush=True)
    structure = structure_rows(args.specs, args.structure_repeat)
    print_table("export (seconds; ratios: exporter time / nnspec streamed export)", exports)
    print_table("structure only (no weights)", structure)
    print_table("onnxruntime latency (ms per call; ratios below 1 favour nnspec)", latencies)
    if args.json:
        args.json.write_text(json.dumps({"export": exports, "structure": structure, "latency": latencies}, indent=2,
                                        default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
