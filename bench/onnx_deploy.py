"""Latency of the deployable ONNX variants of BERT-base and GPT-2 small in onnxruntime.

Variants: fp32 with linear weights stored (in, out) for their MatMuls (today's export),
fp32 with every initializer in the state_dict layout (`fold_transposes=False`, the export
before), each after onnxruntime's transformer optimizer (its Python fusions, whose fused ops are
printed), int8 (dynamic quantisation) of each, and float16. Batch 1, seq 128, 2 threads;
medians of interleaved rounds, so that the machine's swings hit every variant alike.
Also: how often int8's argmax agrees with fp32's on random tokens.

    .venv/bin/python bench/onnx_deploy.py [--spec bert|gpt] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nnspec.backends.onnx.deploy import quantize_int8, to_float16
from nnspec.backends.onnx.export import assemble, lower_graph
from nnspec.backends.onnx.opsets import default_opset
from nnspec.backends.onnx.runtime import random_inputs
from nnspec.backends.onnx.table import Options
from nnspec.backends.onnx.weights import resolve_weights
from nnspec.builder import INPUT, compile_graph, load_spec, nodes

SPECS = {"bert": ("specs/bert.yaml", "mlm_logits"), "gpt": ("specs/gpt.yaml", "logits")}


def _session(model: bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _export(path: str, fold: bool) -> bytes:
    g = compile_graph(load_spec(path))
    lowered = lower_graph(g, Options(default_opset(), fold_transposes=fold))
    owners = {n.id: n for n in nodes(g) if n.op != INPUT}
    return assemble(lowered, resolve_weights(lowered.weights, None, owners)).SerializeToString()


def _optimized(model: bytes, kind: str) -> tuple[bytes, dict[str, int]]:
    """onnxruntime's transformer optimizer (its Python fusions) on the model; the fused op counts."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(onnx.load_from_string(model), model_type=kind, opt_level=0).model
    if not any(o.domain == "com.microsoft" for o in opt.opset_import):
        opt.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    fused = Counter(n.op_type for n in opt.graph.node if n.domain == "com.microsoft")
    return opt.SerializeToString(), dict(sorted(fused.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", choices=sorted(SPECS), default="bert")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    path, out = SPECS[args.spec]
    import onnx

    fp32 = _export(path, fold=True)
    before = _export(path, fold=False)
    optimized, fused = _optimized(fp32, "bert" if args.spec == "bert" else "gpt2")
    print(f"onnxruntime's transformer optimizer fuses: {fused or 'nothing'}")
    models = {"fp32": fp32, "fp32 (before)": before, "fp32 optimized": optimized,
              "int8": quantize_int8(onnx.load_from_string(fp32)).SerializeToString(),
              "int8 (before)": quantize_int8(onnx.load_from_string(before)).SerializeToString(),
              "int8 optimized": quantize_int8(onnx.load_from_string(optimized)).SerializeToString(),
              "fp16": to_float16(onnx.load_from_string(fp32)).SerializeToString()}
    feed = random_inputs(onnx.load_from_string(fp32), {"batch": 1, "seq": args.seq}, seed=0)
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
    base = statistics.median(times["fp32"])
    print(f"{args.spec}: batch 1, seq {args.seq}, {args.threads} threads, median of {args.rounds} interleaved rounds")
    print(f"{'variant':16} {'MB':>7} {'ms':>8} {'speed vs fp32':>14} {'argmax = fp32':>14}")
    for k, m in models.items():
        med = statistics.median(times[k])
        agree = float((results[k].argmax(-1) == results["fp32"].argmax(-1)).mean())
        print(f"{k:16} {len(m) / 1e6:7.1f} {med * 1e3:8.1f} {base / med:13.2f}x {agree:13.1%}")


if __name__ == "__main__":
    main()
