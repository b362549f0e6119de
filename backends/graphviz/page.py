"""The HTML writer: one self-contained page (no network, no external file) holding the SVG
drawing and, for every drawn node, its full details (every argument, types, weights), shown
beside the drawing when the pointer rests on a node and pinned by a click.

Without JavaScript the page lists every node's details under the drawing. ``page.html#c1``
opens with node ``c1`` selected. Once its script has wired the nodes it sets
``data-bound`` (how many) on ``<body>``, which tests read.
"""

from __future__ import annotations

import html
import re

from .dot import details, node_id
from .style import fmt_count
from .view import Item, View

__all__ = ["html_page"]

_STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 Helvetica, Arial, sans-serif; color: #222; display: flex; flex-direction: column;
       height: 100vh; }
header { padding: 8px 16px; border-bottom: 1px solid #ddd; }
header h1 { font-size: 18px; margin: 0 0 2px; }
header p { margin: 0; color: #555; max-width: 110ch; }
main { flex: 1; display: flex; min-height: 0; }
#diagram { flex: 1; overflow: auto; padding: 8px; }
#diagram svg { display: block; }
#panel { width: 380px; overflow: auto; border-left: 1px solid #ddd; padding: 8px 12px; background: #fafafa; }
#panel .hint { color: #777; }
.detail h2 { font-size: 15px; margin: 12px 0 4px; word-break: break-all; }
.detail table { border-collapse: collapse; width: 100%; font-size: 12px; }
.detail th { text-align: left; vertical-align: top; padding: 2px 8px 2px 0; color: #555; white-space: nowrap;
             font-weight: normal; }
.detail td { padding: 2px 0; word-break: break-word; font-family: Menlo, Consolas, monospace; }
body.js .detail { display: none; }
body.js .detail.shown { display: block; }
g.node { cursor: pointer; }
g.node.selected path, g.node.selected polygon, g.node.selected ellipse { stroke: #d62728; stroke-width: 3; }
"""

_SCRIPT = """
(function () {
  var body = document.body, pinned = null, bound = 0;
  body.classList.add("js");
  function detailOf(id) { return document.getElementById("detail-" + id); }
  function show(id) {
    document.querySelectorAll(".detail.shown").forEach(function (d) { d.classList.remove("shown"); });
    document.querySelectorAll("g.node.selected").forEach(function (g) { g.classList.remove("selected"); });
    var d = id && detailOf(id);
    if (!d) { return; }
    d.classList.add("shown");
    var g = document.getElementById(id);
    if (g) { g.classList.add("selected"); }
    document.getElementById("hint").hidden = true;
  }
  document.querySelectorAll("#diagram g.node").forEach(function (g) {
    if (!detailOf(g.id)) { return; }
    g.addEventListener("mouseenter", function () { if (!pinned) { show(g.id); } });
    g.addEventListener("mouseleave", function () { if (!pinned) { show(null); } });
    g.addEventListener("click", function (ev) {
      ev.preventDefault();
      pinned = pinned === g.id ? null : g.id;
      show(pinned || g.id);
    });
    bound += 1;
  });
  function fromHash() {
    var key = decodeURIComponent(location.hash.slice(1));
    if (key && detailOf("nn-" + key)) { pinned = "nn-" + key; show(pinned); }
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
  body.dataset.bound = String(bound);
})();
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _detail(item: Item) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in details(item))
    nid = node_id(item)
    return (f'<section class="detail" id="detail-{_e(nid)}" data-node="{_e(nid)}">'
            f"<h2>{_e(item.full_id)}</h2><table>{rows}</table></section>")


def _inline_svg(svg: str) -> str:
    """The SVG document as an element to inline: no XML declaration, no DOCTYPE."""
    svg = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg)
    return svg.strip()


def html_page(view: View, svg: str) -> str:
    """The page for `view`, whose drawing `svg` is Graphviz's SVG of the same view."""
    sub = f"signature {view.signature} · " if view.signature else ""
    facts = (f"{sub}{view.params:,} params ({fmt_count(view.params)}) · blocks drawn to depth {view.depth} "
             f"of {view.max_depth}{' · repeats unrolled' if view.unroll else ''}")
    doc = f"<p>{_e(view.doc)}</p>" if view.doc else ""
    panel = "\n".join(_detail(i) for i in view.items)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="nnspec">
<title>{_e(view.name)} · nnspec diagram</title>
<style>{_STYLE}</style>
</head>
<body>
<header><h1>{_e(view.name)}</h1>{doc}<p>{_e(facts)}</p></header>
<main>
<div id="diagram">
{_inline_svg(svg)}
</div>
<aside id="panel">
<p class="hint" id="hint">Rest the pointer on a node for its arguments; click to pin them.</p>
{panel}
</aside>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""
