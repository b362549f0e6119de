"""Time of one cached decode step of the Transformer (decode_with_past; its cross-attention keys and
values from decode_cross_kv where the tree derives one), batch 4, source 64, after a target of 32.

Run against two checkouts to compare them (weights random; sizes by key=value):

    python bench/seq2seq_cache_step.py ROOT [vocab=1000 d_model=128 heads=4 d_ff=512 layers=2]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def main() -> None:
    root = sys.argv[1]
    sys.path.insert(0, root)
    from nnspec.backends import to_onnx
    from nnspec.backends.onnx.generate import OnnxSignature
    from nnspec.backends.pytorch import to_torch
    from nnspec.builder import load_spec

    sets = {k: int(v) for k, v in (arg.split("=") for arg in sys.argv[2:])}
    torch.set_num_threads(2)
    spec = load_spec(f"{root}/specs/transformer.yaml", sets)
    torch.manual_seed(0)
    model = to_torch(spec).eval()
    state = model.state_dict()
    batch, src_len, past_len = 4, 64, 32
    rng = np.random.default_rng(0)
    src, src_pad = rng.integers(3, 100, (batch, src_len)), np.zeros((batch, src_len), dtype=bool)
    with torch.no_grad():
        memory = model.signature("encode")(torch.from_numpy(src), torch.from_numpy(src_pad)).numpy()
    known: dict[str, Any] = {"memory": memory, "src_pad": src_pad}
    if "decode_cross_kv" in model.signatures:  # computed once per source, not timed
        cross = OnnxSignature(to_onnx(spec, state, signature="decode_cross_kv"), threads=2)
        known.update({k.replace("present.", "past_key_values."): v for k, v in cross(known).items()})
    ort = OnnxSignature(to_onnx(spec, state, signature="decode_with_past"), threads=2)
    module = model.signature("decode_with_past")
    info = module.meta["nnspec"]
    feed = dict(known)
    for name, (dims, _) in info["input_types"].items():
        if name.startswith("past_key_values.") and name not in feed:
            feed[name] = rng.standard_normal((batch, int(dims[1]), past_len, int(dims[3]))).astype(np.float32)
    feed.update({"tgt": rng.integers(3, 100, (batch, 1)), "position_ids": np.full((batch, 1), past_len),
                 "tgt_pad": np.zeros((batch, past_len + 1), dtype=bool)})
    runs: dict[str, Callable[[], object]] = {
        "onnxruntime": lambda: ort.session.run(None, {n: feed[n] for n in ort.inputs}),
        "pytorch": lambda: module(*[torch.from_numpy(np.asarray(feed[n])) for n in info["inputs"]]),
    }
    for name, run in runs.items():
        times = []
        with torch.inference_mode():
            for _ in range(25):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
        print(f"{name}: {statistics.median(times[5:]) * 1e3:.2f} ms per step ({len(info['inputs'])} inputs)")


if __name__ == "__main__":
    main()
