"""What the diagram shows: block folding by depth, repeats drawn once with ×N or unrolled,
edges between copies, parameter totals, ties and ports (`nnspec.backends.graphviz.view`)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

from nnspec.backends.graphviz import view as view_mod
from nnspec.backends.graphviz.view import ALL, Depth, View, build_view, max_depth
from nnspec.builder import compile_graph, load_spec, nodes, param_count

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.y*ml"))

# A small encoder-decoder: repeated layers (3 copies) that call a nested block (ffn), a
# decoder that reads the encoder's output in every layer, and a head tied to an embedding.
MINI = """
name: mini
params: {d: 16, n: 3}
inputs:
  src: {shape: [batch, seq], dtype: int64}
  tgt: {shape: [batch, tseq], dtype: int64}
blocks:
  ffn:
    params: {d: null, hidden: 32}
    inputs: [x]
    nodes:
      up: {op: linear, in: x, out_features: '${hidden}'}
      act: {op: relu, in: up}
      down: {op: linear, in: act, out_features: '${d}'}
    outputs: {y: down}
  enc_layer:
    params: {d: null}
    inputs: [x]
    nodes:
      attn: {op: multi_head_attention, in: [x, x, x], num_heads: 2}
      res1: {op: add, in: [x, attn]}
      norm1: {op: layer_norm, in: res1}
      ff: {op: ffn, in: norm1, d: '${d}'}
      res2: {op: add, in: [norm1, ff]}
      norm2: {op: layer_norm, in: res2}
    outputs: {y: norm2}
  dec_layer:
    params: {d: null}
    inputs: [x, memory]
    nodes:
      self_attn: {op: multi_head_attention, in: [x, x, x], num_heads: 2, causal: true}
      res1: {op: add, in: [x, self_attn]}
      cross: {op: multi_head_attention, in: {query: res1, key: memory, value: memory}, num_heads: 2}
      res2: {op: add, in: [res1, cross]}
      ff: {op: ffn, in: res2, d: '${d}'}
    outputs: {y: ff}
nodes:
  src_emb: {op: embedding, in: src, num_embeddings: 100, embedding_dim: '${d}'}
  tgt_emb: {op: embedding, in: tgt, num_embeddings: 100, embedding_dim: '${d}'}
  encoder: {op: enc_layer, in: src_emb, repeat: '${n}', d: '${d}'}
  decoder: {op: dec_layer, in: [tgt_emb, encoder], repeat: '${n}', d: '${d}'}
  head: {op: linear, in: decoder, out_features: 100, tie: tgt_emb}
outputs: {logits: head}
"""

LSTM = """
name: seq
inputs: {x: {shape: [batch, seq, 8]}}
nodes:
  enc: {op: lstm, in: x, hidden_size: 4}
  dec: {op: lstm, in: {x: x, h0: enc.h, c0: enc.c}, hidden_size: 4}
outputs: {y: dec.output}
"""


@pytest.fixture(scope="module")
def mini() -> nx.MultiDiGraph:
    return compile_graph(load_spec(MINI))


def keys(v: View, kind: str | None = None) -> list[str]:
    return [i.key for i in v.items if kind is None or i.kind == kind]


def edges(v: View) -> set[tuple[str, str]]:
    return {(e.tail, e.head) for e in v.edges}


def test_depth_0_folds_each_top_level_call_into_one_node(mini: nx.MultiDiGraph) -> None:
    v = build_view(mini, depth=0)
    assert v.groups == ()
    assert keys(v, "block") == ["block/encoder", "block/decoder"]
    enc = v.item("block/encoder")
    assert enc.repeat == 3 and enc.op == "enc_layer" and enc.title == "encoder"
    per_copy = sum(n.params for n in nodes(mini) if n.id.startswith("encoder.0."))
    assert enc.params == 3 * per_copy > 0
    assert enc.inputs == ("batch×seq×16",) and enc.outputs == ("batch×seq×16",)
    assert len(enc.members) == 3 * 8  # every node of every copy
    dec = v.item("block/decoder")
    assert dec.inputs == ("batch×tseq×16", "batch×seq×16")  # the target stream, then the memory
    assert edges(v) >= {("src_emb", "block/encoder"), ("block/encoder", "block/decoder"), ("block/decoder", "head")}


def test_depth_1_draws_one_copy_of_a_repeat_and_folds_the_nested_call(mini: nx.MultiDiGraph) -> None:
    v = build_view(mini, depth=1)
    assert [(g.key, g.repeat, g.parent) for g in v.groups] == [("cluster/encoder", 3, None), ("cluster/decoder", 3, None)]
    ff = v.item("block/encoder.0.ff")
    assert ff.kind == "block" and ff.repeat is None and ff.group == "cluster/encoder" and ff.stack == 3
    assert ff.params == sum(n.params for n in nodes(mini) if n.id.startswith("encoder.0.ff."))
    assert ff.title == "ff"
    assert not any(k.startswith(("encoder.1", "encoder.2")) for k in keys(v))
    attn = v.item("encoder.0.attn")
    assert attn.title == "attn" and attn.full_id == "encoder.0.attn" and attn.stack == 3
    enc = next(g for g in v.groups if g.key == "cluster/encoder")
    assert enc.params == sum(n.params for n in nodes(mini) if n.id.startswith("encoder."))


def test_stacked_repeat_has_no_edges_between_copies(mini: nx.MultiDiGraph) -> None:
    v = build_view(mini, depth=ALL)
    es = edges(v)
    assert ("encoder.0.norm2", "encoder.0.attn") not in es  # copy k's output into copy k+1
    assert ("encoder.0.norm2", "encoder.0.res1") not in es
    assert ("src_emb", "encoder.0.attn") in es
    # the last copy's output reaches the decoder; every decoder copy reads it, drawn once
    cross = [e for e in v.edges if e.head == "decoder.0.cross" and e.tail == "encoder.0.norm2"]
    assert len(cross) == 1 and cross[0].head_ports == ("key", "value")
    assert ("decoder.0.ff.down", "head") in es


def test_depth_all_nests_clusters_as_the_spec_nests_blocks(mini: nx.MultiDiGraph) -> None:
    v = build_view(mini, depth=ALL)
    assert v.depth == max_depth(mini) == 2
    parents = {g.key: g.parent for g in v.groups}
    assert parents == {"cluster/encoder": None, "cluster/encoder.0.ff": "cluster/encoder",
                       "cluster/decoder": None, "cluster/decoder.0.ff": "cluster/decoder"}
    assert v.item("encoder.0.ff.up").group == "cluster/encoder.0.ff"
    assert next(g for g in v.groups if g.key == "cluster/encoder.0.ff").title == "ff"
    assert keys(v, "block") == []


def test_unroll_draws_every_copy_and_chains_them(mini: nx.MultiDiGraph) -> None:
    v = build_view(mini, depth=ALL, unroll=True)
    copies = [g for g in v.groups if g.parent == "cluster/encoder"]
    assert [(g.key, g.index, g.title) for g in copies] == [
        ("cluster/encoder.0", 0, "encoder.0"), ("cluster/encoder.1", 1, "encoder.1"), ("cluster/encoder.2", 2, "encoder.2")]
    assert v.item("encoder.1.ff.up").title == "up"
    assert next(g for g in v.groups if g.key == "cluster/encoder.1.ff").title == "ff"
    es = edges(v)
    assert ("encoder.0.norm2", "encoder.1.attn") in es
    assert ("encoder.2.norm2", "decoder.1.cross") in es
    assert len(keys(v, "op")) == sum(1 for n in nodes(mini) if n.op != "input")
    assert all(i.stack == 1 for i in v.items)


def test_unrolled_repeat_folds_into_one_node_too(mini: nx.MultiDiGraph) -> None:
    v = build_view(mini, depth=0, unroll=True)
    assert keys(v, "block") == ["block/encoder", "block/decoder"]
    assert v.item("block/encoder").repeat == 3


@pytest.mark.parametrize("depth", [0, 1, 2, None])
@pytest.mark.parametrize("unroll", [False, True])
def test_drawn_parameters_add_up_to_the_model(mini: nx.MultiDiGraph, depth: Depth, unroll: bool) -> None:
    v = build_view(mini, depth=depth, unroll=unroll)
    assert sum(i.params * i.stack for i in v.items) == param_count(mini) == v.params


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_seed_spec_node_is_drawn_once_and_parameters_add_up(spec: Path) -> None:
    g = compile_graph(load_spec(spec))
    for depth in range(max_depth(g) + 1):
        v = build_view(g, depth=depth)
        assert sum(i.params * i.stack for i in v.items) == param_count(g)
        drawn = {m for i in v.items for m in i.members} | {i.full_id for i in v.items if i.kind in ("op", "input")}
        reps = {n.id for n in nodes(g) if not any(f.index for f in n.scope)}  # copy 0 stands for the others
        assert reps <= drawn
        assert {e.tail for e in v.edges} | {e.head for e in v.edges} <= set(keys(v))


def test_tied_weights_are_not_counted_twice(mini: nx.MultiDiGraph) -> None:
    v = build_view(mini)
    head = v.item("head")
    assert head.node is not None and head.node.ties == {"weight": ("tgt_emb", "weight")}
    assert head.params == 100  # the bias; the weight is the embedding's
    assert ("tgt_emb", "head") not in edges(v)  # a tie is no tensor


def test_ports_of_multi_output_and_multi_input_ops() -> None:
    v = build_view(compile_graph(load_spec(LSTM)))
    by_tail_port = {(e.tail, e.tail_port): e.head_ports for e in v.edges}
    assert by_tail_port[("enc", "h")] == ("h0",)
    assert by_tail_port[("enc", "c")] == ("c0",)
    assert by_tail_port[("x", None)] == ("x",)
    assert by_tail_port[("dec", "output")] == ()  # into the graph output
    assert keys(v, "output") == ["output/y"]


def test_inputs_come_first_and_outputs_last(mini: nx.MultiDiGraph) -> None:
    kinds = [i.kind for i in build_view(mini).items]
    assert kinds[:2] == ["input", "input"] and kinds[-1] == "output"
    assert "input" not in kinds[2:] and "output" not in kinds[:-1]


def test_auto_depth_is_the_deepest_that_fits(mini: nx.MultiDiGraph, monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_view(mini).depth == 2
    # op and block nodes drawn: 3 + 2 blocks at depth 0, 3 + 6 + 5 at depth 1, 3 + 8 + 7 at depth 2
    for budget, depth in ((13, 0), (14, 1), (17, 1), (18, 2), (4, 0)):
        monkeypatch.setattr(view_mod, "AUTO_MAX_ITEMS", budget)
        assert build_view(mini).depth == depth, budget


@pytest.mark.parametrize("depth", [-1, "deep", True, 1.5])
def test_bad_depth_is_refused(mini: nx.MultiDiGraph, depth: object) -> None:
    with pytest.raises(ValueError, match="depth must be"):
        build_view(mini, depth=depth)  # type: ignore[arg-type]


def test_depth_past_the_deepest_block_draws_everything(mini: nx.MultiDiGraph) -> None:
    assert build_view(mini, depth=7) == build_view(mini, depth=ALL)


NESTED = """
name: nested
inputs: {x: {shape: [batch, 8]}}
blocks:
  unit:
    inputs: [x]
    nodes:
      lin: {op: linear, in: x, out_features: 8}
      act: {op: relu, in: lin}
    outputs: {y: act}
  stage:
    inputs: [x]
    nodes:
      inner: {op: unit, in: x, repeat: 3}
      norm: {op: layer_norm, in: inner}
    outputs: {y: norm}
nodes:
  outer: {op: stage, in: x, repeat: 2}
outputs: {y: outer}
"""


def test_repeat_inside_a_repeat() -> None:
    g = compile_graph(load_spec(NESTED))
    v = build_view(g, depth=ALL)
    assert [(x.key, x.repeat, x.parent) for x in v.groups] == [
        ("cluster/outer", 2, None), ("cluster/outer.0.inner", 3, "cluster/outer")]
    assert keys(v, "op") == ["outer.0.inner.0.lin", "outer.0.inner.0.act", "outer.0.norm"]
    assert v.item("outer.0.inner.0.lin").stack == 6 and v.item("outer.0.norm").stack == 2
    assert edges(v) == {("x", "outer.0.inner.0.lin"), ("outer.0.inner.0.lin", "outer.0.inner.0.act"),
                        ("outer.0.inner.0.act", "outer.0.norm"), ("outer.0.norm", "output/y")}
    inner = next(x for x in v.groups if x.key == "cluster/outer.0.inner")
    assert inner.params == 3 * 72 and inner.title == "inner"
    assert sum(i.params * i.stack for i in v.items) == param_count(g) == 2 * (3 * 72 + 16)
    folded = build_view(g, depth=1)
    assert folded.item("block/outer.0.inner").repeat == 3 and folded.item("block/outer.0.inner").stack == 2
    unrolled = build_view(g, depth=ALL, unroll=True)
    assert len(keys(unrolled, "op")) == 2 * (3 * 2 + 1)
    assert ("outer.0.norm", "outer.1.inner.0.lin") in edges(unrolled)
    assert next(x for x in unrolled.groups if x.key == "cluster/outer.1.inner.2").title == "inner.2"


CNN = """
name: cnn
inputs: {image: {shape: [batch, 3, 32, 32]}}
blocks:
  conv_block:
    inputs: [x]
    params: {c: 32}
    nodes:
      conv: {op: conv2d, in: x, out_channels: '${c}', kernel_size: 3, padding: 1}
      bn: {op: batch_norm, in: conv}
      relu: {op: relu, in: bn}
      pool: {op: max_pool2d, in: relu, kernel_size: 2}
    outputs: {y: pool}
nodes:
  b1: {op: conv_block, in: image, c: 32}
  b2: {op: conv_block, in: b1, c: 64, repeat: 2}
  same: {op: conv_block, in: b2, c: 64, repeat: 2}
outputs: {y: same}
"""


def test_a_repeat_whose_copies_differ_is_drawn_copy_by_copy() -> None:
    """b2's copies take 32 and 64 channels at 16x16 and 8x8: no one copy stands for both. `same`'s
    copies agree (64 -> 64 channels; the sizes halve, so they too differ)."""
    g = compile_graph(load_spec(CNN))
    v = build_view(g, depth=ALL)
    assert sum(i.params * i.stack for i in v.items) == param_count(g)
    convs = {i.full_id: i for i in v.items if i.op == "conv2d"}
    assert {"b2.0.conv", "b2.1.conv"} <= set(convs)
    assert convs["b2.0.conv"].params == 64 * 32 * 9 + 64 and convs["b2.1.conv"].params == 64 * 64 * 9 + 64
    assert all(i.stack == 1 for i in v.items)


def test_a_repeat_of_equal_copies_stays_stacked() -> None:
    spec = CNN.replace("kernel_size: 2}", "kernel_size: 1}")  # no pooling: copies 1 of b2 and both of `same` agree
    g = compile_graph(load_spec(spec))
    v = build_view(g, depth=ALL)
    assert sum(i.params * i.stack for i in v.items) == param_count(g)
    assert "same.1.conv" not in {i.full_id for i in v.items}
    assert next(i for i in v.items if i.full_id == "same.0.conv").stack == 2


# --- folding one call or copy by its path (what the .html page does block by block) ---------


def test_folding_a_path_draws_what_the_depth_draws_for_that_call(mini: nx.MultiDiGraph) -> None:
    # folded one by one, each call is the node (and edges) its depth would draw; the other stays open
    deep, shallow = build_view(mini, depth=1), build_view(mini, depth=0)
    v = build_view(mini, depth=1, folded=["encoder"])
    assert v.item("block/encoder") == shallow.item("block/encoder")
    assert [g.key for g in v.groups] == ["cluster/decoder"]
    assert v.item("block/decoder.0.ff") == deep.item("block/decoder.0.ff")
    assert not any(k.startswith("encoder.") or k == "block/encoder.0.ff" for k in keys(v))
    assert ("block/encoder", "decoder.0.cross") in edges(v) and ("src_emb", "block/encoder") in edges(v)
    into = [e for e in v.edges if e.tail == "src_emb" and e.head == "block/encoder"]
    assert len(into) == 1 and into[0].head_ports == ()  # one edge for the tensor, however many use it inside


def test_folding_a_nested_call_inside_a_stacked_repeat(mini: nx.MultiDiGraph) -> None:
    v = build_view(mini, depth=ALL, folded=["encoder.0.ff"])
    assert v.item("block/encoder.0.ff") == build_view(mini, depth=1).item("block/encoder.0.ff")
    assert "decoder.0.ff.up" in keys(v) and "encoder.0.ff.up" not in keys(v)
    assert {e.tensor for e in v.edges if e.head == "block/encoder.0.ff"} == {"encoder.0.norm1:y"}


def test_folding_one_unrolled_copy(mini: nx.MultiDiGraph) -> None:
    v = build_view(mini, depth=1, unroll=True, folded=["encoder.1"])
    copy = v.item("block/encoder.1")
    assert copy.title == "encoder.1" and copy.repeat is None and copy.group == "cluster/encoder"
    assert copy.params == sum(n.params for n in nodes(mini) if n.id.startswith("encoder.1."))
    assert copy.inputs == copy.outputs == ("batch×seq×16",)
    assert edges(v) >= {("encoder.0.norm2", "block/encoder.1"), ("block/encoder.1", "encoder.2.attn")}
    assert [g.key for g in v.groups if g.parent == "cluster/encoder"] == ["cluster/encoder.0", "cluster/encoder.2"]


def test_folding_an_unknown_path_is_an_error_with_a_hint(mini: nx.MultiDiGraph) -> None:
    with pytest.raises(ValueError, match=r"'encodr' is no block call drawn as a cluster; did you mean 'encoder'\?"):
        build_view(mini, folded=["encodr"])
    with pytest.raises(ValueError, match=r"'encoder\.1'"):  # stacked: only copy 0 is drawn
        build_view(mini, folded=["encoder.1"])
    assert view_mod.foldable(mini) == ["encoder", "encoder.0.ff", "decoder", "decoder.0.ff"]
