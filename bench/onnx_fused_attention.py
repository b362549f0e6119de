"""Latency of fused attention in onnxruntime: BERT-base or GPT-2 small, exported as today (MatMul,
Softmax and masks) and with ``fused_attention`` (onnxruntime's com.microsoft.MultiHeadAttention),
each also after onnxruntime's transformer optimizer (its Python fusions: the fused ops it made are
printed). Batch 1, seq 128, 2 threads; medians of interleaved rounds, so that the machine's swings
hit every variant alike. Each variant's max |diff| from today's export is printed too.

    .venv/bin/python bench/onnx_fused_attention.py [--spec bert|gpt] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nnspec.backends.onnx import random_inputs, to_onnx
from nnspec.builder import compile_graph, load_spec

SPECS = {"bert": ("specs/bert.yaml", "mlm_logits", "bert"), "gpt": ("specs/gpt.yaml", "logits", "gpt2")}


def _session(model: bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _optimized(model: onnx.ModelProto, kind: str) -> onnx.ModelProto:
    """onnxruntime's transformer optimizer (its Python fusions, opt_level 0) on a copy of the model."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(onnx.ModelProto.FromString(model.SerializeToString()), model_type=kind, opt_level=0).model
    if not any(o.domain == "com.microsoft" for o in opt.opset_import):
        opt.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return opt


def _contrib_ops(model: onnx.ModelProto) -> str:
    ops = Counter(n.op_type for n in model.graph.node if n.domain == "com.microsoft")
    return ", ".join(f"{k} {v}" for k, v in sorted(ops.items())) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", choices=sorted(SPECS), default="bert")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    path, out, kind = SPECS[args.spec]
    g = compile_graph(load_spec(path))
    today, fused = to_onnx(g), to_onnx(g, fused_attention=True)
    protos = {"today": today, "today + optimizer": _optimized(today, kind),
              "fused": fused, "fused + optimizer": _optimized(fused, kind)}
    models = {k: m.SerializeToString() for k, m in protos.items()}
    feed = random_inputs(today, {"batch": 1, "seq": args.seq}, seed=0)
    if "padding_mask" in feed:
        feed["padding_mask"][:] = False
    sessions = {k: _session(m, args.threads) for k, m in models.items()}
    results = {k: s.run([out], feed)[0] for k, s in sessions.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(args.rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run([out], feed)
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["today"])
    print(f"{args.spec}: batch 1, seq {args.seq}, {args.threads} threads, median of {args.rounds} interleaved rounds, "
          f"onnxruntime {ort.__version__}")
    print(f"{'variant':18} {'nodes':>6} {'ms':>8} {'vs today':>9} {'max |diff|':>11}  com.microsoft ops")
    for k, proto in protos.items():
        med = statistics.median(times[k])
        diff = float(np.abs(results[k] - results["today"]).max())
        print(f"{k:18} {len(proto.graph.node):6} {med * 1e3:8.1f} {base / med:8.2f}x {diff:11.2e}  {_contrib_ops(proto)}")


if __name__ == "__main__":
    main()
