"""The DOT drawing: labels, colours, legend, options, determinism, and the op table's
coverage of the registry (`nnspec.backends.graphviz.to_graphviz`)."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import graphviz
import pytest
from op_cases import CASES, OpCase
from test_graphviz_view import MINI

from nnspec.backends.graphviz import SHAPES, to_graphviz
from nnspec.backends.graphviz.style import COLORS, fmt_count
from nnspec.builder import FAMILIES, OPS, compile_graph, load_spec, nodes

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "specs" / "lenet5.yaml"


def node_line(source: str, name: str) -> str:
    """The DOT statement of node `name` (quoted or not)."""
    quoted = re.escape(f'"{name}"') if not re.fullmatch(r"\w+", name) else re.escape(name)
    match = re.search(rf"^\t+{quoted} \[(.*)\]$", source, re.M)
    assert match, f"no node {name} in the DOT text"
    return match.group(1)


def label_text(line: str) -> str:
    """A node's HTML-like label as plain text (tags dropped, lines joined by |)."""
    label = re.search(r"label=<(.*?)> (?:fillcolor|id|shape)", line)
    assert label
    text = re.sub(r"<br/>", "|", label.group(1))
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def test_returns_a_digraph_from_a_path_a_spec_or_a_graph() -> None:
    spec = load_spec(LENET)
    g = compile_graph(spec)
    outs = [to_graphviz(x) for x in (LENET, str(LENET), spec, g)]
    assert all(isinstance(o, graphviz.Digraph) for o in outs)
    assert len({o.source for o in outs}) == 1
    from_text = to_graphviz(LENET.read_text()).source  # the same but for the file named in hover texts
    assert from_text == outs[0].source.replace("lenet5.yaml:", "<text>:")


def test_a_node_shows_its_id_op_key_args_and_params() -> None:
    src = to_graphviz(LENET).source
    assert label_text(node_line(src, "c1")) == "c1|conv2d 6@5x5|156 params"
    assert label_text(node_line(src, "f6")) == "f6|linear → 84|10.2k params"
    assert label_text(node_line(src, "a1")) == "a1|tanh"  # no weights, no params line
    assert label_text(node_line(src, "image")) == "image|batch×1×32×32"
    assert label_text(node_line(src, "output/logits")) == "logits|batch×10"


def test_edges_carry_the_symbolic_shape() -> None:
    src = to_graphviz(LENET).source
    assert "c1 -> a1 [label=<batch×6×28×28>]" in src
    assert "flat -> f6 [label=<batch×120>]" in src


def test_no_params_and_no_shapes() -> None:
    src = to_graphviz(LENET, shapes=False, params=False).source
    assert label_text(node_line(src, "c1")) == "c1|conv2d 6@5x5"
    assert label_text(node_line(src, "image")) == "image"
    assert "batch" not in re.sub(r'tooltip="[^"]*"', "", src)  # the hover text keeps the full types
    assert "params" not in re.sub(r'tooltip="[^"]*"', "", src)


def test_inputs_and_outputs_are_drawn_apart_from_ops() -> None:
    src = to_graphviz(LENET).source
    assert "shape=ellipse" in node_line(src, "image") and "peripheries" not in node_line(src, "image")
    assert "peripheries=2" in node_line(src, "output/logits")
    assert "shape=box" in node_line(src, "c1")
    assert re.search(r"\{\n\t\trank=min\n\t\timage\n\t\}", src)
    assert re.search(r"\{\n\t\trank=max\n\t\t\"output/logits\"\n", src)


def test_a_colour_per_family_and_a_legend_of_the_families_drawn() -> None:
    src = to_graphviz(LENET).source
    for node, family in (("c1", "conv"), ("s2", "pool"), ("f6", "linear"), ("a1", "activation"), ("flat", "tensor")):
        assert f'fillcolor="{COLORS[family]}"' in node_line(src, node), node
    legend = label_text(node_line(src, "legend/families"))
    assert [w.strip() for w in legend.split() if w.strip()] == ["conv", "pool", "linear", "activation", "tensor"]
    assert "attention" not in legend


def test_colours_are_distinct_and_cover_every_family() -> None:
    assert set(FAMILIES) - {"input"} <= set(COLORS)
    drawn = [c for k, c in COLORS.items() if k not in ("input", "output")]
    assert len(set(drawn)) == len(drawn)


def test_op_table_covers_the_registry_exactly() -> None:
    missing = sorted(set(OPS) - set(SHAPES))
    unknown = sorted(set(SHAPES) - set(OPS))
    assert missing == [] and unknown == [], f"ops without a diagram shape: {missing}; shapes for no op: {unknown}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_op_case_draws(case: OpCase) -> None:
    g = compile_graph(load_spec(case.spec()))
    src = to_graphviz(g).source
    model = g.nodes["n"]["node"].model
    assert label_text(node_line(src, "n")).split("|")[1] == f"{case.op} {model.label()}".strip()
    assert f'fillcolor="{COLORS[type(model).FAMILY]}"' in node_line(src, "n")
    for port in case.expect:
        assert f"output/o_{port}" in src


def test_repeated_block_is_marked_n_times() -> None:
    drawn = to_graphviz(MINI, depth="all").source
    cluster = re.search(r"\tsubgraph cluster_encoder \{\n\t\t(.*)\n", drawn)
    assert cluster and 'label=<<b>encoder</b>  enc_layer  <font point-size="14"><b>3×</b></font>' in cluster.group(1)
    assert '\t\tsubgraph "cluster_encoder.0.ff" {' in drawn  # nested inside the encoder's cluster
    folded = to_graphviz(MINI, depth=0).source
    assert "cluster" not in folded
    line = node_line(folded, "block/encoder")
    assert "shape=box3d" in line
    assert label_text(line).startswith("encoder|enc_layer ×3|in  batch×seq×16|out  batch×seq×16|")


def test_cluster_totals_count_every_copy() -> None:
    g = compile_graph(load_spec(MINI))
    total = sum(n.params for n in nodes(g) if n.id.startswith("encoder."))
    assert f"{fmt_count(total)} params" in to_graphviz(g, depth=1).source


def test_rankdir() -> None:
    assert "rankdir=LR" in to_graphviz(LENET, rankdir="LR").source
    with pytest.raises(ValueError, match="rankdir"):
        to_graphviz(LENET, rankdir="BT")  # type: ignore[arg-type]


def test_tied_weight_is_written_on_the_node() -> None:
    src = to_graphviz(ROOT / "specs" / "gpt.yaml").source
    assert label_text(node_line(src, "lm_head")) == "lm_head|linear → 50257|weight tied to wte"
    assert "tied weight: wte.weight" in node_line(src, "lm_head")  # in the hover text too
    assert "tied" not in label_text(node_line(src, "wte"))


def test_stacks_beside_each_other_start_on_one_rank() -> None:
    """The decoder's first layer sits beside the encoder's (as in the paper), not below it."""
    src = to_graphviz(MINI, depth=1).source
    ranks = re.findall(r"\{\n\t\trank=same\n((?:\t\t.*\n)+)\t\}", src)
    assert any('"encoder.0.attn"' in r and '"decoder.0.self_attn"' in r for r in ranks)


def test_dot_text_is_the_same_bytes_in_another_process() -> None:
    code = ("import sys; from nnspec.backends.graphviz import to_graphviz; "
            "sys.stdout.write(to_graphviz(sys.argv[1], depth=sys.argv[2] if sys.argv[2] == 'all' else None).source)")
    outs = set()
    for seed, depth in (("1", "auto"), ("2", "auto")):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "transformer.yaml"), depth],
                              capture_output=True, text=True, env=env, cwd=ROOT, check=True)
        outs.add(proc.stdout)
    assert len(outs) == 1
    assert to_graphviz(ROOT / "specs" / "transformer.yaml").source in outs


def test_signature_is_drawn_when_asked() -> None:
    spec = ROOT / "specs" / "transformer.yaml"
    src = to_graphviz(spec, signature="encode").source
    assert "signature encode" in src and "decoder" not in src
    assert '"output/memory"' in src


def test_public_name_and_no_heavy_imports() -> None:
    code = ("import sys; from nnspec.backends import to_graphviz; import nnspec.backends.graphviz.commands; "
            "assert to_graphviz.__module__ == 'nnspec.backends.graphviz'; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stdout.strip() == "[]"


def test_node_names_cannot_clash_with_the_drawings_own_nodes() -> None:
    spec = {"name": "clash", "inputs": {"x": {"shape": ["batch", 4]}},
            "nodes": {"legend": {"op": "linear", "in": "x", "out_features": 4},
                      "y": {"op": "relu", "in": "legend"}},
            "outputs": {"y": "y", "legend": "legend"}}
    src = to_graphviz(spec).source
    assert label_text(node_line(src, "legend")) == "legend|linear → 4|20 params"
    assert label_text(node_line(src, "y")) == "y|relu"
    assert label_text(node_line(src, "output/y")) == "y|batch×4"
    assert label_text(node_line(src, "output/legend")) == "legend|batch×4"
    assert "legend/families" in src
