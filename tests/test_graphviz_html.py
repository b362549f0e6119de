"""The .html page in a real browser (headless Chromium): the SVG is there, the script wires
every node, and a node's full arguments show when it is selected. Also the .mmd file drawn
by Mermaid itself, where a copy of mermaid.min.js is at hand.

Skipped, with the reason, where Chromium is absent (Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nnspec.backends.graphviz import render

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
    nodes = re.findall(r'<g id="(nn-[^"]+)" class="node(?: block)?"', dom)  # every depth's drawing
    details = re.findall(r'<section class="detail[^"]*" id="detail-(nn-[^"]+)"', dom)
    assert "nn-encoder.0.self_attn" in nodes and "nn-output/logits" in nodes and "nn-block/encoder" in nodes
    assert set(details) == set(nodes) - {"nn-legend/families"}
    shown = dom.split('<div id="diagram"', 1)[1].split("</svg>", 1)[0]
    live = set(re.findall(r'<g id="(nn-[^"]+)" class="node(?: block)?"', shown)) - {"nn-legend/families"}
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
    `note`d, and any error the page raised, as headless Chromium leaves them."""
    text = page.read_text()
    catch = "<head><script>window.addEventListener('error', function (e) { document.documentElement.dataset.jserror = " \
            "String(e.message); });</script>"
    probe = ("<script>var notes = {}; function note(k, v) { notes[k] = String(v); "
             "document.body.dataset.notes = JSON.stringify(notes); }\n"
             f"try {{ {actions} }} catch (e) {{ note('error', e); }}</script></body>")
    driven = tmp_path / "driven.html"
    driven.write_text(text.replace("<head>", catch, 1).replace("</body>", probe, 1))
    dom = dump_dom(driven.as_uri())
    assert "data-jserror" not in dom, re.search(r'data-jserror="([^"]*)"', dom)
    found = re.search(r'<body[^>]*data-notes="([^"]*)"', dom)
    assert found, dom[-2000:]
    notes: dict[str, str] = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
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
