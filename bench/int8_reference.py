"""int8 on BERT-base, a reference point: Hugging Face's model exported the usual way, against nnspec's.

Builds `transformers.BertForPreTraining(BertConfig())` (BERT-base, random init, seed 0, no hub),
exports it with `torch.onnx.export` (the TorchScript exporter, opset 17, dynamic batch and seq)
and quantises it with `onnxruntime.quantization.quantize_dynamic` (weights QInt8, every op type
the tool quantises by default, per channel and per tensor). The same weights go through nnspec
the way a user takes them: `nnspec import-weights specs/bert.yaml` with `specs/maps/bert_hf.yaml`,
then `nnspec export` with and without `--quantize int8`; `quantize_dynamic` with the same
settings on nnspec's fp32 export makes the like-for-like pair, and nnspec's own rule (MatMuls only,
the heads outside the encoder layers float) applied to HF's graph makes the other.

Measured on `--inputs` random inputs of batch 1 and `--seq` tokens (ids uniform in [0, vocab),
no padding, segment 0): the share of MLM positions whose argmax equals the fp32 model's, the
relative error of the MLM logits ||int8 - fp32|| / ||fp32||, and latency (`--threads` intra-op
threads, every session once per round, interleaved, medians) as a ratio to the same exporter's
fp32. The two fp32 models are first checked against each other (the transplant is exact).

    .venv/bin/python bench/int8_reference.py [--rounds 9] [--inputs 8] [--seq 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
SPEC, MAP = ROOT / "specs" / "bert.yaml", ROOT / "specs" / "maps" / "bert_hf.yaml"
OPSET = 17


@dataclass(frozen=True)
class Variant:
    """One ONNX file and how to feed it: which fp32 model it is measured against, and its MLM output."""

    path: Path
    family: str  # "hf" | "nnspec": the fp32 model of the same exporter is its reference
    output: str


class _Tuple(torch.nn.Module):
    """BertForPreTraining with tuple outputs (MLM logits, NSP logits), for the TorchScript exporter."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.prediction_logits, out.seq_relationship_logits


def _hf_model(seed: int, work: Path) -> tuple[Path, Path, int]:
    """BERT-base with random weights, saved as safetensors and exported to ONNX; the vocab size."""
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(seed)
    config = BertConfig()
    model = BertForPreTraining(config).eval()
    model.save_pretrained(work / "hf")
    onnx_path = work / "hf.onnx"
    ids = torch.randint(0, config.vocab_size, (1, 16))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dims = {0: "batch", 1: "seq"}
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer flags transformers' mask code; the check against nnspec shows the graph holds at --seq
        warnings.simplefilter("ignore")
        torch.onnx.export(_Tuple(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(onnx_path),
                          input_names=names, output_names=["prediction_logits", "seq_relationship_logits"],
                          dynamic_axes={n: dims for n in [*names, "prediction_logits"]}, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    print(f"transformers: BertForPreTraining(BertConfig()), attention '{config._attn_implementation}', "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")
    return work / "hf" / "model.safetensors", onnx_path, config.vocab_size


def _nnspec(*args: str) -> None:
    """One nnspec command, as a user runs it (its one-line report printed)."""
    done = subprocess.run([sys.executable, "-m", "nnspec", *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"nnspec {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    print(f"$ nnspec {args[0]} ...: {(done.stdout + done.stderr).strip().splitlines()[-1]}")


def _quantize(src: Path, dst: Path, per_channel: bool, **kw: object) -> Path:
    """`quantize_dynamic` as its documentation shows it: QInt8 weights, default op types (unless `kw`)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, once per call
    quantize_dynamic(src, dst, per_channel=per_channel, weight_type=QuantType.QInt8, **kw)
    return dst


def _hf_heads(path: Path) -> list[str]:
    """The weight MatMul/Gemm nodes of HF's export outside its encoder layers: the MLM transform
    and decoder, the pooler, NSP (nnspec's `deploy.head_matmuls` rule, on the exporter's names)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    heads = [n for n in graph.node
             if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights and "/encoder/" not in n.name]
    # the quantizer first rewrites a Gemm as a MatMul named <name>_MatMul: exclude that too
    return [n.name for n in heads] + [f"{n.name}_MatMul" for n in heads if n.op_type == "Gemm"]


def _census(path: Path) -> str:
    """What a model computes in 8 bits: its integer MatMuls and dequantised (8-bit) initializers."""
    ops = Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    int8 = ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"]
    return f"{int8} int8 MatMuls, {ops['MatMul']} float MatMuls, {ops['DequantizeLinear']} DequantizeLinear"


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _feeds(family: str, ids: np.ndarray) -> dict[str, np.ndarray]:
    if family == "hf":
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "padding_mask": np.zeros(ids.shape, bool)}


def _compare(ys: list[np.ndarray], refs: list[np.ndarray]) -> tuple[float, float]:
    """MLM argmax agreement over every position, and the mean relative error of the logits."""
    agree = np.mean([(y.argmax(-1) == r.argmax(-1)).mean() for y, r in zip(ys, refs, strict=True)])
    error = np.mean([np.linalg.norm(y - r) / np.linalg.norm(r) for y, r in zip(ys, refs, strict=True)])
    return float(agree), float(error)


def _variants(work: Path, seed: int) -> tuple[dict[str, Variant], int]:
    ckpt, hf, vocab = _hf_model(seed, work)
    w, ours = work / "w.safetensors", work / "nnspec.onnx"
    _nnspec("import-weights", str(SPEC), str(ckpt), "--map", str(MAP), "-o", str(w))
    _nnspec("export", str(SPEC), "--weights", str(w), "-o", str(ours))
    _nnspec("export", str(SPEC), "--weights", str(w), "--quantize", "int8", "-o", str(work / "nnspec-int8.onnx"))
    variants = {
        "HF fp32": Variant(hf, "hf", "prediction_logits"),
        "HF int8 per channel": Variant(_quantize(hf, work / "hf-pc.onnx", True), "hf", "prediction_logits"),
        "HF int8 per tensor": Variant(_quantize(hf, work / "hf-pt.onnx", False), "hf", "prediction_logits"),
        # nnspec's shipped rule on HF's graph: MatMuls only, the heads float
        "HF int8 heads float": Variant(_quantize(hf, work / "hf-hf.onnx", True, op_types_to_quantize=["MatMul"],
                                                 nodes_to_exclude=_hf_heads(hf)), "hf", "prediction_logits"),
        "nnspec fp32": Variant(ours, "nnspec", "mlm_logits"),
        "nnspec --quantize int8": Variant(work / "nnspec-int8.onnx", "nnspec", "mlm_logits"),
        "nnspec int8 per channel": Variant(_quantize(ours, work / "nn-pc.onnx", True), "nnspec", "mlm_logits"),
        "nnspec int8 per tensor": Variant(_quantize(ours, work / "nn-pt.onnx", False), "nnspec", "mlm_logits"),
    }
    return variants, vocab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (median)")
    ap.add_argument("--inputs", type=int, default=8, help="random inputs the agreement is measured on")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--seed", type=int, default=0, help="seed of the weights; the inputs use seed+1..seed+N")
    args = ap.parse_args()
    if min(args.rounds, args.inputs, args.seq, args.threads) < 1:
        ap.error("--rounds, --inputs, --seq and --threads must be at least 1")
    if args.seq > 512:
        ap.error("--seq is at most 512, BERT-base's positions")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="nnspec-int8-ref-") as tmp:
        variants, vocab = _variants(Path(tmp), args.seed)
        for name, v in variants.items():
            if "int8" in name:
                print(f"{name}: {_census(v.path)}")
        ids = [np.random.default_rng(args.seed + 1 + i).integers(0, vocab, (1, args.seq)) for i in range(args.inputs)]
        sessions = {name: _session(v.path, args.threads) for name, v in variants.items()}
        sizes = {name: v.path.stat().st_size for name, v in variants.items()}

    outs = {name: [sessions[name].run([v.output], _feeds(v.family, x))[0] for x in ids]
            for name, v in variants.items()}
    agree, error = _compare(outs["nnspec fp32"], outs["HF fp32"])
    print(f"nnspec fp32 vs HF fp32 (the transplant): argmax {agree:.2%}, rel. error {error:.1e}")

    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        x = ids[r % len(ids)]
        for name, v in variants.items():
            feed = _feeds(v.family, x)
            t = time.perf_counter()
            sessions[name].run([v.output], feed)
            times[name].append(time.perf_counter() - t)

    print(f"\nBERT-base, batch 1, seq {args.seq}, {args.threads} threads, onnxruntime {ort.__version__}; "
          f"agreement over {args.inputs * args.seq} positions ({args.inputs} random inputs); "
          f"median of {args.rounds} interleaved rounds; each int8 against its own exporter's fp32")
    print(f"{'variant':24} {'MB':>7} {'ms':>8} {'fp32/int8':>10} {'argmax = fp32':>14} {'rel. error':>11}")
    for name, v in variants.items():
        ref = "HF fp32" if v.family == "hf" else "nnspec fp32"
        med = statistics.median(times[name])
        speed = statistics.median(times[ref]) / med
        a, e = _compare(outs[name], outs[ref])
        print(f"{name:24} {sizes[name] / 1e6:7.1f} {med * 1e3:8.1f} {speed:9.2f}x {a:13.1%} {e:11.4f}")


if __name__ == "__main__":
    main()
