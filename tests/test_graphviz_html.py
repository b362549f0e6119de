"""The .html page in a real browser (headless Chromium): the SVG is there, the script wires
every node, a node's full arguments show when it is selected, and blocks fold and open one by
one, each state drawing what `build_view` draws with those blocks folded. Also the .mmd file
drawn by Mermaid itself, where a copy of mermaid.min.js is at hand.

Skipped, with the reason, where Chromium is absent (Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nnspec.backends.graphviz import render
from nnspec.backends.graphviz.view import View, as_graph, build_view, foldable, shown

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in (os.environ.get("NNSPEC_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), shutil.which("google-chrome")) if p), None)
MERMAID_JS = next((p for p in (os.environ.get("NNSPEC_MERMAID_JS"),
                               str(ROOT / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"))
                   if p and Path(p).is_file()), None)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium); "
                                                "the .html page is not opened in a browser"),
    pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed"),
]


def dump_dom(url: str, budget_ms: int = 0) -> str:
    """The page's DOM after its scripts ran, as headless Chromium serialises it."""
    assert CHROMIUM is not None
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-dev-shm-usage", "--no-first-run", "--allow-file-access-from-files"]
    if budget_ms:
        args.append(f"--virtual-time-budget={budget_ms}")
    proc = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def transformer_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(ROOT / "specs" / "transformer.yaml", tmp_path_factory.mktemp("html") / "transformer.html")


def test_page_shows_the_svg_and_wires_every_node(transformer_page: Path) -> None:
    dom = dump_dom(transformer_page.as_uri())
    assert re.search(r"<svg[^>]*>", dom)
    nodes = re.findall(r'<g id="(nn-[^"]+)" class="node[^"]*"', dom)  # every depth's drawing
    details = re.findall(r'<section class="detail[^"]*" id="detail-(nn-[^"]+)"', dom)
    assert "nn-encoder.0.self_attn" in nodes and "nn-output/logits" in nodes and "nn-block/encoder" in nodes
    assert set(details) == set(nodes) - {"nn-legend/families"}
    shown = dom.split('<div id="diagram"', 1)[1].split("</svg>", 1)[0]
    live = set(re.findall(r'<g id="(nn-[^"]+)" class="node[^"]*"', shown)) - {"nn-legend/families"}
    bound = re.search(r'<body[^>]*data-bound="(\d+)"', dom)
    assert bound and int(bound.group(1)) == len(live) > 0  # the script ran and wired each node shown
    assert 'class="js"' in dom
    assert 'class="detail shown"' not in dom  # nothing selected yet


def test_selected_node_shows_its_full_arguments(transformer_page: Path) -> None:
    dom = dump_dom(transformer_page.as_uri() + "#decoder.0.multihead_attn")
    shown = re.findall(r'<section class="detail shown" id="detail-([^"]+)"[^>]*>(.*?)</section>', dom, re.S)
    assert [s[0] for s in shown] == ["nn-decoder.0.multihead_attn"]
    text = re.sub(r"<[^>]+>", " ", shown[0][1])
    for expected in ("arg num_heads", "8", "arg dropout", "0.1", "in key_padding_mask", "weight in_proj_weight",
                     "1536×512", "drawn once for 6 copies", "params", "1,050,624"):
        assert expected in text, expected
    assert re.search(r'<g id="nn-decoder.0.multihead_attn" class="node selected"', dom)


def _drive(page: Path, tmp_path: Path, actions: str) -> dict[str, str]:
    """Run `actions` (JavaScript over the page's `nnspec` API) after the page's own script; what they
    `note`d, and any error the page raised or wrote to the console, as headless Chromium leaves them."""
    text = page.read_text()
    catch = ("<head><script>function jserror(m) { document.documentElement.dataset.jserror = String(m); }\n"
             "window.addEventListener('error', function (e) { jserror(e.message); });\n"
             "window.addEventListener('unhandledrejection', function (e) { jserror(e.reason); });\n"
             "var consoleError = console.error; console.error = function () {\n"
             "  jserror(Array.from(arguments).join(' ')); consoleError.apply(console, arguments); };</script>")
    probe = ("<script>var notes = {}; function note(k, v) { notes[k] = String(v); "
             "document.body.dataset.notes = JSON.stringify(notes); }\n"
             f"try {{ {actions} }} catch (e) {{ note('error', e); }}</script></body>")
    driven = tmp_path / "driven.html"
    driven.write_text(text.replace("<head>", catch, 1).replace("</body>", probe, 1))
    dom = dump_dom(driven.as_uri())
    assert "data-jserror" not in dom, re.search(r'data-jserror="([^"]*)"', dom)
    found = re.search(r'<body[^>]*data-notes="([^"]*)"', dom)
    assert found, dom[-2000:]
    notes: dict[str, str] = json.loads(html.unescape(found.group(1)))
    assert "error" not in notes, notes["error"]
    return notes


def test_viewer_searches_collapses_and_expands(transformer_page: Path, tmp_path: Path) -> None:
    notes = _drive(transformer_page, tmp_path, """
      note("depth", document.body.dataset.depth); note("bound", document.body.dataset.bound);
      nnspec.search("multi_head_attention"); note("matches", nnspec.matches().join(","));
      nnspec.next(); note("selected", document.querySelector(".detail.shown").dataset.node);
      note("box", document.querySelector("#diagram svg").getAttribute("viewBox"));
      nnspec.step(-1); note("collapsed", document.body.dataset.depth + " " + document.body.dataset.bound);
      note("folded", document.querySelectorAll("#diagram g.node.block").length);
      nnspec.search("self_attn"); note("folded_matches", nnspec.matches().length);
      nnspec.openBlock("nn-block/encoder"); note("opened", document.body.dataset.depth);
      note("cluster", !!document.getElementById("nn-cluster/encoder"));
      nnspec.search("encoder.0.self"); note("open_matches", nnspec.matches().join(","));
      nnspec.fit(); nnspec.zoom(2); note("zoomed", document.querySelector("#diagram svg").getAttribute("viewBox"));
    """)
    assert notes["depth"] == "1" and int(notes["bound"]) > 30
    assert sorted(notes["matches"].split(",")) == ["nn-decoder.0.multihead_attn", "nn-decoder.0.self_attn",
                                                   "nn-encoder.0.self_attn"]
    assert notes["selected"] == notes["matches"].split(",")[0] and notes["box"] != notes["zoomed"]
    depth, bound = notes["collapsed"].split()
    assert depth == "0" and 0 < int(bound) < int(notes["bound"]) and int(notes["folded"]) >= 2  # encoder, decoder
    assert notes["folded_matches"] == "0"  # folded: the attention nodes are inside the block nodes
    assert notes["opened"] == "1" and notes["cluster"] == "true"
    assert notes["open_matches"] == "nn-encoder.0.self_attn"


# Clicks go where a user's would: to whatever element is drawn at the centre of the target.
CLICK = """
function clickAt(el) {
  var r = el.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
  var hit = document.elementFromPoint(x, y);
  hit.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true, clientX: x, clientY: y}));
  return hit;
}
function hidden(id) { var g = document.getElementById(id); return !g || getComputedStyle(g).display === "none"; }
"""


def test_clicking_a_block_folds_it_alone_and_clicking_its_node_opens_it(transformer_page: Path, tmp_path: Path) -> None:
    notes = _drive(transformer_page, tmp_path, CLICK + """
      var title = document.getElementById("nn-cluster/encoder").querySelector("text");
      note("hit", clickAt(title).closest("g.cluster").id);
      note("depth", document.body.dataset.depth); note("folded", document.body.dataset.folded);
      note("inner", ["nn-encoder.0.self_attn", "nn-encoder.0.norm2", "nn-cluster/encoder"].map(hidden).join(","));
      note("others", ["nn-decoder.0.self_attn", "nn-decoder.0.multihead_attn", "nn-cluster/decoder", "nn-src_embed",
                      "nn-block/encoder"].map(hidden).join(","));
      note("edges", JSON.stringify(nnspec.edges()));
      nnspec.search("self_attn"); note("matches", nnspec.matches().join(","));
      nnspec.search("encoder_layer"); note("block_matches", nnspec.matches().join(","));
      nnspec.search("");
      note("open_hit", clickAt(document.getElementById("nn-block/encoder")).closest("g.node").id);
      note("reopened", document.body.dataset.depth + "|" + document.body.dataset.folded + "|" +
                       ["nn-encoder.0.self_attn", "nn-cluster/encoder", "nn-block/encoder"].map(hidden).join(","));
    """)
    assert notes["hit"] == "nn-cluster/encoder"
    assert notes["depth"] == "1" and notes["folded"] == "cluster/encoder"  # the decoder stays open
    assert notes["inner"] == "true,true,true"
    assert notes["others"] == "false,false,false,false,false"
    assert notes["matches"] == "nn-decoder.0.self_attn" and notes["block_matches"] == "nn-block/encoder"
    expected = build_view(as_graph(ROOT / "specs" / "transformer.yaml"), 1, folded=["encoder"])
    assert sorted(map(tuple, json.loads(notes["edges"]))) == _edges(expected)
    assert notes["open_hit"] == "nn-block/encoder"
    assert notes["reopened"] == "1||false,false,true"


def _edges(view: View) -> list[tuple[str, ...]]:
    """The edges of a view as the page reports them: ends and the two label lines `dot` draws."""
    out = []
    for e in view.edges:
        shape = shown(e.type) if view.item(e.head).kind != "output" else ""
        first = " ".join(x for x in (e.tail_port or "", shape) if x)
        out.append((e.tail, e.head, first, "→ " + ", ".join(e.head_ports) if e.head_ports else ""))
    return sorted(out)


@pytest.mark.parametrize(("spec", "unroll"), [("unet", False), ("resnet50", True), ("transformer", True)])
def test_every_folding_draws_what_build_view_draws(spec: str, unroll: bool, tmp_path: Path) -> None:
    """Blocks nested, repeated and unrolled, folded and opened one by one: at each step the nodes
    and edges shown (ends and labels) are those of the view built with the same blocks folded."""
    graph = as_graph(ROOT / "specs" / f"{spec}.yaml")
    paths = foldable(graph, unroll)
    deepest, outer = paths[-1], next(p for p in paths if "." not in p)
    steps = ['document.getElementById("openall").click()', f"nnspec.fold({deepest!r})", f"nnspec.fold({paths[1]!r})",
             f"nnspec.fold({outer!r})", f"nnspec.openBlock({outer!r})", 'document.getElementById("foldall").click()',
             f"nnspec.openBlock({deepest!r})", f"nnspec.fold({outer!r})"]
    page = render(ROOT / "specs" / f"{spec}.yaml", tmp_path / f"{spec}.html", unroll=unroll)
    notes = _drive(page, tmp_path, "".join(f"""
      {step};
      note({i}, JSON.stringify([Number(document.body.dataset.depth), nnspec.folded(), nnspec.nodes(), nnspec.edges()]));
    """ for i, step in enumerate(["", *steps])))
    seen = set()
    for i in range(len(steps) + 1):
        depth, folded, shown_nodes, shown_edges = json.loads(notes[str(i)])
        view = build_view(graph, depth, unroll, folded=[k.removeprefix("cluster/") for k in folded])
        assert sorted(shown_nodes) == sorted(i.key for i in view.items), (i, depth, folded)
        assert sorted(map(tuple, shown_edges)) == _edges(view), (i, depth, folded)
        seen.add((depth, bool(folded)))
    assert any(folded for _, folded in seen) and len({d for d, _ in seen}) > 1  # folds within a depth, and depths


def test_page_is_self_contained(transformer_page: Path) -> None:
    text = transformer_page.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<link" not in text and "@import" not in text


@pytest.mark.skipif(MERMAID_JS is None, reason="no mermaid.min.js (set NNSPEC_MERMAID_JS, or `npm install mermaid` "
                                               "in the repository root) to check the .mmd files with Mermaid itself")
@pytest.mark.parametrize("spec", ["lenet5", "transformer", "lstm_seq2seq"])
def test_mermaid_draws_the_mmd_file(spec: str, tmp_path: Path) -> None:
    assert MERMAID_JS is not None
    mmd = render(ROOT / "specs" / f"{spec}.yaml", tmp_path / f"{spec}.mmd").read_text()
    page = tmp_path / "mermaid.html"
    page.write_text(f"""<!DOCTYPE html><html><body><div id="out">pending</div>
<script src="{Path(MERMAID_JS).as_uri()}"></script>
<script>
mermaid.initialize({{startOnLoad: false}});
mermaid.render("d", {json.dumps(mmd)}).then(
  function (r) {{ document.getElementById("out").innerHTML = r.svg; document.body.dataset.result = "ok"; }},
  function (e) {{ document.body.dataset.result = "error: " + String(e && e.message || e); }});
</script></body></html>""")
    dom = dump_dom(page.as_uri(), budget_ms=20000)
    result = re.search(r'<body[^>]*data-result="([^"]*)"', dom)
    assert result and result.group(1) == "ok", result.group(1) if result else dom[-2000:]
    assert dom.count('class="node') >= 5


@pytest.mark.skipif(MERMAID_JS is None, reason="no mermaid.min.js (set NNSPEC_MERMAID_JS, or `npm install mermaid` "
                                               "in the repository root) to check the .mmd files with Mermaid itself")
@pytest.mark.parametrize("spec", ["lenet5", "transformer"])
def test_mermaid_legend_sits_below_the_diagram(spec: str, tmp_path: Path) -> None:
    """Unlinked, the legend was laid out beside the diagram's top and pushed it aside."""
    assert MERMAID_JS is not None
    mmd = render(ROOT / "specs" / f"{spec}.yaml", tmp_path / f"{spec}.mmd").read_text()
    page = tmp_path / "legend.html"
    page.write_text(f"""<!DOCTYPE html><html><body><div id="out">pending</div>
<script src="{Path(MERMAID_JS).as_uri()}"></script>
<script>
mermaid.initialize({{startOnLoad: false}});
mermaid.render("d", {json.dumps(mmd)}).then(function (r) {{
  document.getElementById("out").innerHTML = r.svg;
  var svg = document.querySelector("#out svg");
  var legend = Array.from(svg.querySelectorAll("g.cluster")).find(function (g) {{ return /legend$/.test(g.id); }});
  var top = legend.getBoundingClientRect().top, bottom = 0;
  svg.querySelectorAll("g.node").forEach(function (n) {{
    if (!/legend_/.test(n.id)) {{ bottom = Math.max(bottom, n.getBoundingClientRect().bottom); }}
  }});
  document.body.dataset.result = top > bottom ? "below" : "legend top " + top + " above the nodes' bottom " + bottom;
}}, function (e) {{ document.body.dataset.result = "error: " + String(e && e.message || e); }});
</script></body></html>""")
    dom = dump_dom(page.as_uri(), budget_ms=20000)
    result = re.search(r'<body[^>]*data-result="([^"]*)"', dom)
    assert result and result.group(1) == "below", result.group(1) if result else dom[-2000:]
