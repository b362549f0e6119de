"""One table of op cases drives every per-op test: shape inference, backend parity, diagrams.

Each case is one op with its arguments and input types, where dims may be symbolic (``B``,
``T``, ``S``), and the output shapes the shape rule must infer. Tests evaluate the backends at
several concrete values of each symbol (`SIZES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Shape = list[int | str]

SIZES: list[dict[str, int]] = [{"B": 1, "T": 1, "S": 3}, {"B": 2, "T": 5, "S": 4}, {"B": 3, "T": 7, "S": 9}]
"""Concrete values of the symbolic dims, each tried in turn."""


@dataclass(frozen=True)
class OpCase:
    """An op, its arguments, typed inputs by port, and the output shapes it must infer."""

    id: str
    op: str
    args: dict[str, Any]
    inputs: dict[str, tuple[Shape, str]]
    expect: dict[str, Shape]
    tol: float = 1e-4
    train_only: bool = False  # randomness in train mode (dropout): compare in eval mode only
    extra: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        """A one-node spec that exercises this case: input ``in_<port>`` feeds port ``<port>`` of node ``n``."""
        return {
            "name": f"case_{self.id}",
            "inputs": {f"in_{p}": {"shape": s, "dtype": d} for p, (s, d) in self.inputs.items()},
            "nodes": {"n": {"op": self.op, "in": {p: f"in_{p}" for p in self.inputs}, **self.args}},
            "outputs": {f"o_{p}": f"n.{p}" for p in self.expect},
        }


def _x(*shape: int | str, dtype: str = "float32") -> tuple[Shape, str]:
    return (list(shape), dtype)


INT, BOOL = "int64", "bool"

CASES: list[OpCase] = [
    # tensor ops (variadic ports are numbered 0, 1, ...)
    OpCase("add", "add", {}, {"0": _x("B", 3, 4), "1": _x("B", 3, 4)}, {"y": ["B", 3, 4]}),
    OpCase("add_broadcast", "add", {}, {"0": _x("B", "T", 4), "1": _x(1, 4), "2": _x(4)}, {"y": ["B", "T", 4]}),
    OpCase("mul", "mul", {}, {"0": _x("B", 3), "1": _x("B", 1)}, {"y": ["B", 3]}),
    OpCase("scale", "scale", {"factor": 2.5}, {"x": _x("B", "T", 4)}, {"y": ["B", "T", 4]}),
    OpCase("matmul", "matmul", {}, {"a": _x("B", "T", 6), "b": _x("B", 6, 5)}, {"y": ["B", "T", 5]}),
    OpCase("matmul_bcast", "matmul", {}, {"a": _x("B", 2, "T", 6), "b": _x(6, 3)}, {"y": ["B", 2, "T", 3]}),
    OpCase("concat", "concat", {"dim": 1}, {"0": _x("B", "T", 4), "1": _x("B", 3, 4)}, {"y": ["B", "T + 3", 4]}),
    OpCase("split", "split", {"sizes": [2, 3, 1], "dim": -1}, {"x": _x("B", "T", 6)},
           {"0": ["B", "T", 2], "1": ["B", "T", 3], "2": ["B", "T", 1]}),
    OpCase("reshape", "reshape", {"shape": [0, 0, 2, -1]}, {"x": _x("B", "T", 8)}, {"y": ["B", "T", 2, 4]}),
    OpCase("reshape_flat", "reshape", {"shape": [-1, 4]}, {"x": _x("B", 3, 4)}, {"y": ["3*B", 4]}),
    OpCase("flatten", "flatten", {}, {"x": _x("B", 3, 4, 5)}, {"y": ["B", 60]}),
    OpCase("flatten_mid", "flatten", {"start_dim": 1, "end_dim": 2}, {"x": _x("B", "T", 4, 5)}, {"y": ["B", "4*T", 5]}),
    OpCase("transpose", "transpose", {"dim0": 1, "dim1": 2}, {"x": _x("B", "T", 4)}, {"y": ["B", 4, "T"]}),
    OpCase("permute", "permute", {"dims": [0, 2, 3, 1]}, {"x": _x("B", 3, "T", 5)}, {"y": ["B", "T", 5, 3]}),
    OpCase("slice", "slice", {"dim": 2, "start": 1, "end": 5, "step": 2}, {"x": _x("B", "T", 8)}, {"y": ["B", "T", 2]}),
    OpCase("slice_open", "slice", {"dim": 1, "start": 0, "end": 2}, {"x": _x("B", 6, 4)}, {"y": ["B", 2, 4]}),
    OpCase("select", "select", {"dim": 1, "index": 0}, {"x": _x("B", "T", 4)}, {"y": ["B", 4]}),
    OpCase("mean", "mean", {"dim": 1}, {"x": _x("B", "T", 4)}, {"y": ["B", 4]}),
    OpCase("mean_keep", "mean", {"dim": [1, 2], "keepdim": True}, {"x": _x("B", 3, 4, 5)}, {"y": ["B", 1, 1, 5]}),
    # layers
    OpCase("linear", "linear", {"out_features": 7}, {"x": _x("B", "T", 5)}, {"y": ["B", "T", 7]}),
    OpCase("linear_nobias", "linear", {"out_features": 3, "bias": False}, {"x": _x("B", 5)}, {"y": ["B", 3]}),
    OpCase("conv1d", "conv1d", {"out_channels": 4, "kernel_size": 3, "padding": 1}, {"x": _x("B", 2, 10)},
           {"y": ["B", 4, 10]}),
    OpCase("conv1d_stride", "conv1d", {"out_channels": 4, "kernel_size": 3, "stride": 2}, {"x": _x("B", 3, 11)},
           {"y": ["B", 4, 5]}),
    OpCase("conv2d", "conv2d", {"out_channels": 6, "kernel_size": 5}, {"x": _x("B", 1, 12, 12)}, {"y": ["B", 6, 8, 8]}),
    OpCase("conv2d_full", "conv2d", {"out_channels": 4, "kernel_size": [3, 2], "stride": 2, "padding": 1, "groups": 2},
           {"x": _x("B", 2, 9, 8)}, {"y": ["B", 4, 5, 5]}),
    OpCase("conv2d_same", "conv2d", {"out_channels": 3, "kernel_size": 3, "padding": "same"},
           {"x": _x("B", 2, 7, 6)}, {"y": ["B", 3, 7, 6]}),
    OpCase("max_pool1d", "max_pool1d", {"kernel_size": 2}, {"x": _x("B", 3, 9)}, {"y": ["B", 3, 4]}),
    OpCase("max_pool2d", "max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, {"x": _x("B", 3, 8, 8)},
           {"y": ["B", 3, 4, 4]}),
    OpCase("avg_pool1d", "avg_pool1d", {"kernel_size": 3, "stride": 1}, {"x": _x("B", 2, 6)}, {"y": ["B", 2, 4]}),
    OpCase("avg_pool2d", "avg_pool2d", {"kernel_size": 2}, {"x": _x("B", 3, 8, 6)}, {"y": ["B", 3, 4, 3]}),
    OpCase("embedding", "embedding", {"num_embeddings": 11, "embedding_dim": 6}, {"x": _x("B", "T", dtype=INT)},
           {"y": ["B", "T", 6]}, extra={"high": 11}),
    OpCase("embedding_pad", "embedding", {"num_embeddings": 9, "embedding_dim": 4, "padding_idx": 0},
           {"x": _x("B", "T", dtype=INT)}, {"y": ["B", "T", 4]}, extra={"high": 9}),
    OpCase("position_embedding", "position_embedding", {"max_len": 16}, {"x": _x("B", "T", 6)}, {"y": ["B", "T", 6]}),
    OpCase("sinusoidal_position", "sinusoidal_position", {"max_len": 32}, {"x": _x("B", "T", 8)}, {"y": ["B", "T", 8]}),
    OpCase("dropout", "dropout", {"p": 0.3}, {"x": _x("B", "T", 4)}, {"y": ["B", "T", 4]}, train_only=True),
    OpCase("batch_norm1d", "batch_norm", {}, {"x": _x("B", 4)}, {"y": ["B", 4]}),
    OpCase("batch_norm2d", "batch_norm", {"eps": 1e-3}, {"x": _x("B", 3, 5, 5)}, {"y": ["B", 3, 5, 5]}),
    OpCase("layer_norm", "layer_norm", {}, {"x": _x("B", "T", 8)}, {"y": ["B", "T", 8]}),
    # activations
    OpCase("relu", "relu", {}, {"x": _x("B", "T", 4)}, {"y": ["B", "T", 4]}),
    OpCase("tanh", "tanh", {}, {"x": _x("B", 4)}, {"y": ["B", 4]}),
    OpCase("sigmoid", "sigmoid", {}, {"x": _x("B", 4)}, {"y": ["B", 4]}),
    OpCase("gelu", "gelu", {}, {"x": _x("B", "T", 4)}, {"y": ["B", "T", 4]}),
    OpCase("gelu_tanh", "gelu", {"approximate": "tanh"}, {"x": _x("B", "T", 4)}, {"y": ["B", "T", 4]}),
    OpCase("softmax", "softmax", {"dim": -1}, {"x": _x("B", "T", 5)}, {"y": ["B", "T", 5]}),
    OpCase("log_softmax", "log_softmax", {"dim": 1}, {"x": _x("B", 5)}, {"y": ["B", 5]}),
    # sequence
    OpCase("rnn", "rnn", {"hidden_size": 6}, {"x": _x("B", "T", 4)}, {"output": ["B", "T", 6], "h": [1, "B", 6]}),
    OpCase("rnn_relu_2l_bi", "rnn", {"hidden_size": 5, "num_layers": 2, "bidirectional": True, "nonlinearity": "relu"},
           {"x": _x("B", "T", 3), "h0": _x(4, "B", 5)}, {"output": ["B", "T", 10], "h": [4, "B", 5]}),
    OpCase("lstm", "lstm", {"hidden_size": 6}, {"x": _x("B", "T", 4)},
           {"output": ["B", "T", 6], "h": [1, "B", 6], "c": [1, "B", 6]}),
    OpCase("lstm_2l_bi_state", "lstm", {"hidden_size": 5, "num_layers": 2, "bidirectional": True},
           {"x": _x("B", "T", 3), "h0": _x(4, "B", 5), "c0": _x(4, "B", 5)},
           {"output": ["B", "T", 10], "h": [4, "B", 5], "c": [4, "B", 5]}),
    OpCase("gru", "gru", {"hidden_size": 6}, {"x": _x("B", "T", 4)}, {"output": ["B", "T", 6], "h": [1, "B", 6]}),
    OpCase("gru_3l_state", "gru", {"hidden_size": 4, "num_layers": 3}, {"x": _x("B", "T", 5), "h0": _x(3, "B", 4)},
           {"output": ["B", "T", 4], "h": [3, "B", 4]}),
    # attention
    OpCase("attention", "attention", {}, {"query": _x("B", "T", 8), "key": _x("B", "S", 8), "value": _x("B", "S", 6)},
           {"y": ["B", "T", 6]}),
    OpCase("attention_causal_4d", "attention", {"causal": True},
           {"query": _x("B", 2, "T", 4), "key": _x("B", 2, "T", 4), "value": _x("B", 2, "T", 4)}, {"y": ["B", 2, "T", 4]}),
    OpCase("attention_mask", "attention", {},
           {"query": _x("B", "T", 4), "key": _x("B", "S", 4), "value": _x("B", "S", 4),
            "key_padding_mask": _x("B", "S", dtype=BOOL)}, {"y": ["B", "T", 4]}),
    OpCase("mha_self", "multi_head_attention", {"num_heads": 2}, {"query": _x("B", "T", 8)}, {"y": ["B", "T", 8]}),
    OpCase("mha_causal", "multi_head_attention", {"num_heads": 4, "causal": True}, {"query": _x("B", "T", 8)},
           {"y": ["B", "T", 8]}),
    OpCase("mha_cross_mask", "multi_head_attention", {"num_heads": 2},
           {"query": _x("B", "T", 6), "key": _x("B", "S", 6), "value": _x("B", "S", 6),
            "key_padding_mask": _x("B", "S", dtype=BOOL)}, {"y": ["B", "T", 6]}),
    # convolution, resampling and pooling beyond the seed set
    # activations beyond the seed set
    # normalisation beyond batch and layer norm
    # elementwise arithmetic and reductions
    # tensor construction and indexing
]


SMALL_SPECS: dict[str, dict[str, Any]] = {
    "lenet5": {},
    "rnn_intent": {"vocab": 50, "embed_dim": 8, "hidden": 12},
    "lstm_sentiment": {"vocab": 50, "embed_dim": 8, "hidden": 12},
    "lstm_seq2seq": {"src_vocab": 40, "tgt_vocab": 30, "embed_dim": 8, "hidden": 12, "layers": 2},
    "transformer": {"vocab": 40, "d_model": 16, "heads": 2, "d_ff": 32, "layers": 2, "max_len": 64},
    "bert": {"vocab": 40, "hidden": 16, "layers": 2, "heads": 2, "intermediate": 32, "max_len": 64},
    "gpt": {"vocab": 40, "n_ctx": 64, "d_model": 16, "layers": 2, "heads": 2},
}
"""Overrides that scale each seed spec down to test size (same structure, small widths); shared by the
ONNX spec tests and bench/onnx_parity.py --small."""
