"""Latency of the deployable ONNX variants of BERT-base and GPT-2 small in onnxruntime.

Variants: fp32 with linear weights stored (in, out) for their MatMuls (today's export),
fp32 with every initializer in the state_dict layout (`fold_transposes=False`, the export
before), each after onnxruntime's transformer optimizer (its Python fusions, whose fused ops are
printed), int8 (dynamic quantisation) of each, and float16. Batch 1, seq 128, 2 threads;
medians of interleaved rounds, so that the machine's swings hit every variant alike.
Also: how often each variant's argmax agrees with fp32's over `--inputs` random inputs, and
the relative error of its logits, ||variant - fp32|| / ||fp32||.

With `--int8-sweep`, the variants are int8 candidates instead (the trade-off between speed
and agreement): how weights are scaled, which MatMuls stay float (by rules on the graph, not
by name), and onnxruntime's other 8-bit tool, MatMulNBits with int8 compute.

    .venv/bin/python bench/onnx_deploy.py [--spec bert|gpt] [--rounds 15] [--inputs 8] [--int8-sweep]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nnspec.backends.onnx.deploy import head_matmuls, quantize_int8, to_float16
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
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(onnx.load_from_string(model), model_type=kind, opt_level=0).model
    if not any(o.domain == "com.microsoft" for o in opt.opset_import):
        opt.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    fused = Counter(n.op_type for n in opt.graph.node if n.domain == "com.microsoft")
    return opt.SerializeToString(), dict(sorted(fused.items()))


def _weight_matmuls(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """The MatMul/Gemm nodes the quantizer can reach, with their weight's (in, out) shape."""
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits:
            out[n.name] = inits[n.input[1]]
        elif n.op_type == "Gemm" and n.input[1] in inits:
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            out[n.name] = inits[n.input[1]][::-1] if trans_b else inits[n.input[1]]
    return out


def _contracting(model: onnx.ModelProto) -> list[str]:
    """Weight MatMuls that reduce the width (in > out): a feed-forward block's down-projection."""
    return [name for name, (k, n) in _weight_matmuls(model).items() if k > n]


def _expanding(model: onnx.ModelProto, ratio: int = 4) -> list[str]:
    """Weight MatMuls that widen by `ratio` or more: a feed-forward block's up-projection."""
    return [name for name, (k, n) in _weight_matmuls(model).items() if n >= ratio * k]


def _nbits8(fp32: onnx.ModelProto, block: int) -> onnx.ModelProto:
    """8-bit block-wise weights, activations quantised per block at run time (MatMulNBits, accuracy level 4)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=4, bits=8)
    q = MatMulNBitsQuantizer(fp32, bits=8, block_size=block, is_symmetric=True, accuracy_level=4, algo_config=config)
    q.process()
    return q.model.model


def _sweep(fp32: bytes) -> dict[str, Callable[[], bytes]]:
    """int8 candidates, each a thunk (the quantizer is slow; they are made one at a time)."""
    m = onnx.load_from_string(fp32)

    def q(**kw: object) -> Callable[[], bytes]:
        return lambda: quantize_int8(onnx.load_from_string(fp32), **kw).SerializeToString()  # type: ignore[arg-type]

    heads, down, up = head_matmuls(m), _contracting(m), _expanding(m)
    return {"every weight MatMul": q(exclude=()),
            "per tensor": q(per_channel=False, exclude=()),
            "7-bit weights": q(reduce_range=True, exclude=()),
            "float heads (shipped)": q(),
            "float down-proj": q(exclude=down),
            "float heads+down": q(exclude=heads + down),
            "float heads+up": q(exclude=heads + up),
            "float heads+up+down": q(exclude=heads + up + down),
            "nbits8 block 128": lambda: _nbits8(onnx.load_from_string(fp32), 128).SerializeToString(),
            "nbits8 block 32": lambda: _nbits8(onnx.load_from_string(fp32), 32).SerializeToString()}


def _variants(fp32: bytes, path: str, spec: str) -> dict[str, Callable[[], bytes]]:
    before = _export(path, fold=False)
    optimized, fused = _optimized(fp32, "bert" if spec == "bert" else "gpt2")
    print(f"onnxruntime's transformer optimizer fuses: {fused or 'nothing'}")
    return {"fp32 (before)": lambda: before, "fp32 optimized": lambda: optimized,
            "int8": lambda: quantize_int8(onnx.load_from_string(fp32)).SerializeToString(),
            "int8 (before)": lambda: quantize_int8(onnx.load_from_string(before)).SerializeToString(),
            "int8 optimized": lambda: quantize_int8(onnx.load_from_string(optimized)).SerializeToString(),
            "fp16": lambda: to_float16(onnx.load_from_string(fp32)).SerializeToString()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", choices=sorted(SPECS), default="bert")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--inputs", type=int, default=8, help="random inputs the agreement is measured on (seeds 0..N-1)")
    ap.add_argument("--int8-sweep", action="store_true", help="compare int8 candidates instead of the variants")
    ap.add_argument("--only", nargs="+", metavar="VARIANT", help="time only these variants (and fp32)")
    args = ap.parse_args()
    path, out = SPECS[args.spec]

    fp32 = _export(path, fold=True)
    makers = _sweep(fp32) if args.int8_sweep else _variants(fp32, path, args.spec)
    if args.only:
        unknown = sorted(set(args.only) - set(makers))
        if unknown:
            ap.error(f"unknown variant(s) {unknown}; choose from {sorted(makers)}")
        makers = {k: v for k, v in makers.items() if k in args.only}
    feeds = []
    for seed in range(args.inputs):
        feed = random_inputs(onnx.load_from_string(fp32), {"batch": 1, "seq": args.seq}, seed=seed)
        if "padding_mask" in feed:
            feed["padding_mask"][:] = False
        feeds.append(feed)
    sessions = {"fp32": _session(fp32, args.threads)}
    sizes = {"fp32": len(fp32)}
    refs = [sessions["fp32"].run([out], f)[0] for f in feeds]
    agree, error = {}, {}
    for name, make in makers.items():  # one model in memory at a time, besides the sessions
        model = make()
        sizes[name] = len(model)
        sessions[name] = _session(model, args.threads)
        ys = [sessions[name].run([out], f)[0] for f in feeds]
        agree[name] = float(np.mean([(y.argmax(-1) == r.argmax(-1)).mean() for y, r in zip(ys, refs, strict=True)]))
        error[name] = float(np.mean([np.linalg.norm(y - r) / np.linalg.norm(r) for y, r in zip(ys, refs, strict=True)]))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(args.rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run([out], feeds[0])
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["fp32"])
    positions = args.inputs * args.seq
    print(f"{args.spec}: batch 1, seq {args.seq}, {args.threads} threads, median of {args.rounds} interleaved rounds; "
          f"agreement over {positions} positions ({args.inputs} random inputs)")
    print(f"{'variant':22} {'MB':>7} {'ms':>8} {'speed vs fp32':>14} {'argmax = fp32':>14} {'rel. error':>11}")
    for k in sessions:
        med = statistics.median(times[k])
        a, e = (agree[k], error[k]) if k in agree else (1.0, 0.0)
        print(f"{k:22} {sizes[k] / 1e6:7.1f} {med * 1e3:8.1f} {base / med:13.2f}x {a:13.1%} {e:11.4f}")


if __name__ == "__main__":
    main()
