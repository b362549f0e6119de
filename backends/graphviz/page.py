"""The HTML writer: one self-contained page (no network, no external file), an interactive
viewer of the SVG drawing:

- pan (drag) and zoom (wheel, ``+``/``-``), ``fit`` to the window (how it opens) and ``1:1``;
- search by node id or op: matches are marked, Enter steps through them and selects each;
- blocks expanded and collapsed in the page: the drawing at every depth is inside (``expand``
  and ``collapse`` step the depth; a double click on a folded block opens it);
- a side panel with every node's details (arguments, shapes, parameters, initialisers), shown
  when the pointer rests on a node and pinned by a click.

Without JavaScript the page shows the drawing at its depth and lists every node's details.
``page.html#c1`` opens with node ``c1`` selected. Once its script has wired the nodes it sets
``data-bound`` (how many nodes of the shown drawing have details) and ``data-depth`` on
``<body>``, which tests read.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

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
#view { flex: 1; display: flex; flex-direction: column; min-width: 0; }
#tools { display: flex; gap: 6px; align-items: center; padding: 4px 8px; border-bottom: 1px solid #eee;
         flex-wrap: wrap; }
#tools button { font: inherit; padding: 1px 8px; }
#tools input { font: inherit; width: 16em; }
#found { color: #555; min-width: 6em; }
body:not(.js) #tools { display: none; }
#diagram { flex: 1; overflow: auto; padding: 8px; }
body.js #diagram { overflow: hidden; padding: 0; cursor: grab; }
#diagram svg { display: block; }
body.js #diagram svg { width: 100%; height: 100%; }
g.node.match path, g.node.match polygon, g.node.match ellipse { stroke: #ff7f0e; stroke-width: 4; }
body.searching g.node:not(.match) { opacity: 0.35; }
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
  var body = document.body, pinned = null, bound = 0, diagram = document.getElementById("diagram");
  var levels = Array.from(document.querySelectorAll("template.level")).map(function (t) {
    return Number(t.dataset.depth); });
  var depth = Number(diagram.dataset.depth), svg = null, home = null, box = null, matches = [], at = -1;
  body.classList.add("js");
  function detailOf(id) { return document.getElementById("detail-" + id); }
  function setBox(b) { box = b; svg.setAttribute("viewBox", [b.x, b.y, b.w, b.h].join(" ")); }
  function fit() { setBox({x: home.x, y: home.y, w: home.w, h: home.h}); }
  function zoom(f, cx, cy) {
    var r = svg.getBoundingClientRect(), s = Math.max(box.w / r.width, box.h / r.height);
    var px = box.x + ((cx === undefined ? r.width / 2 : cx - r.left) - (r.width - box.w / s) / 2) * s;
    var py = box.y + ((cy === undefined ? r.height / 2 : cy - r.top) - (r.height - box.h / s) / 2) * s;
    setBox({x: px - (px - box.x) / f, y: py - (py - box.y) / f, w: box.w / f, h: box.h / f});
  }
  function center(g) {
    var b = g.getBBox(), m = g.getCTM(), root = svg.getCTM();
    var x = b.x + b.width / 2, y = b.y + b.height / 2;
    if (m && root) { var p = svg.createSVGPoint(); p.x = x; p.y = y;
      p = p.matrixTransform(root.inverse().multiply(m)); x = p.x; y = p.y; }
    var w = Math.min(home.w, Math.max(b.width * 4, home.w / 3)), h = w * home.h / home.w;
    setBox({x: x - w / 2, y: y - h / 2, w: w, h: h});
  }
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
  function wire() {
    bound = 0;
    svg = diagram.querySelector("svg");
    var vb = svg.viewBox.baseVal;
    home = {x: vb.x, y: vb.y, w: vb.width, h: vb.height};
    svg.removeAttribute("width"); svg.removeAttribute("height");
    fit();
    diagram.querySelectorAll("g.node").forEach(function (g) {
      if (!detailOf(g.id)) { return; }
      g.addEventListener("mouseenter", function () { if (!pinned) { show(g.id); } });
      g.addEventListener("mouseleave", function () { if (!pinned) { show(null); } });
      g.addEventListener("click", function (ev) {
        ev.preventDefault();
        pinned = pinned === g.id ? null : g.id;
        show(pinned || g.id);
      });
      if (g.classList.contains("block")) {
        g.addEventListener("dblclick", function (ev) { ev.preventDefault(); openBlock(g.id); });
      }
      bound += 1;
    });
    body.dataset.bound = String(bound);
    body.dataset.depth = String(depth);
    document.getElementById("depth").textContent = "depth " + depth + " of " + levels[levels.length - 1];
    search(document.getElementById("q").value);
  }
  function setDepth(d) {
    var t = document.querySelector('template.level[data-depth="' + d + '"]');
    if (!t) { return false; }
    depth = d;
    diagram.replaceChildren(t.content.cloneNode(true));
    if (pinned && !document.getElementById(pinned)) { pinned = null; show(null); }
    wire();
    if (pinned) { show(pinned); }
    return true;
  }
  function step(by) {
    var i = levels.indexOf(depth) + by;
    if (i >= 0 && i < levels.length) { setDepth(levels[i]); }
  }
  function openBlock(id) {
    var key = id.slice(3).replace(/^block[/]/, "");  // nn-block/encoder opens as nn-cluster/encoder
    for (var i = levels.indexOf(depth) + 1; i < levels.length; i++) {
      setDepth(levels[i]);
      var c = document.getElementById("nn-cluster/" + key);
      if (c) { center(c); return; }
    }
  }
  function search(q) {
    q = q.trim().toLowerCase();
    matches = []; at = -1;
    diagram.querySelectorAll("g.node").forEach(function (g) {
      var d = detailOf(g.id), hay = (g.id.slice(3) + " " + (d ? d.dataset.op : "")).toLowerCase();
      var hit = q !== "" && hay.indexOf(q) >= 0;
      g.classList.toggle("match", hit);
      if (hit) { matches.push(g); }
    });
    body.classList.toggle("searching", q !== "");
    document.getElementById("found").textContent = q ? matches.length + " found" : "";
    body.dataset.matches = String(matches.length);
  }
  function next() {
    if (!matches.length) { return; }
    at = (at + 1) % matches.length;
    var g = matches[at];
    pinned = g.id; show(g.id); center(g);
  }
  var q = document.getElementById("q");
  q.addEventListener("input", function () { search(q.value); });
  q.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { ev.preventDefault(); next(); } });
  document.getElementById("fit").addEventListener("click", fit);
  document.getElementById("one").addEventListener("click", function () {
    var r = svg.getBoundingClientRect(); setBox({x: box.x, y: box.y, w: r.width, h: r.height}); });
  document.getElementById("zin").addEventListener("click", function () { zoom(1.25); });
  document.getElementById("zout").addEventListener("click", function () { zoom(0.8); });
  document.getElementById("expand").addEventListener("click", function () { step(1); });
  document.getElementById("collapse").addEventListener("click", function () { step(-1); });
  diagram.addEventListener("wheel", function (ev) {
    ev.preventDefault(); zoom(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX, ev.clientY); }, {passive: false});
  var drag = null;
  diagram.addEventListener("mousedown", function (ev) { drag = {x: ev.clientX, y: ev.clientY, box: box}; });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) { return; }
    var r = svg.getBoundingClientRect(), s = Math.max(box.w / r.width, box.h / r.height);
    setBox({x: drag.box.x - (ev.clientX - drag.x) * s, y: drag.box.y - (ev.clientY - drag.y) * s,
            w: drag.box.w, h: drag.box.h});
  });
  window.nnspec = {search: search, next: next, setDepth: setDepth, step: step, openBlock: openBlock, fit: fit,
                   zoom: zoom, matches: function () { return matches.map(function (g) { return g.id; }); }};
  function fromHash() {
    var key = decodeURIComponent(location.hash.slice(1));
    if (key && detailOf("nn-" + key)) { pinned = "nn-" + key; show(pinned); }
  }
  window.addEventListener("hashchange", fromHash);
  wire();
  fromHash();
})();
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _detail(item: Item) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in details(item))
    nid = node_id(item)
    return (f'<section class="detail" id="detail-{_e(nid)}" data-node="{_e(nid)}" data-op="{_e(item.op or item.kind)}">'
            f"<h2>{_e(item.full_id)}</h2><table>{rows}</table></section>")


def _mark_blocks(svg: str, view: View) -> str:
    """Give the SVG groups of folded blocks the class ``block``, for a double click to open them."""
    for item in view.items:
        if item.kind == "block":
            nid = node_id(item).replace("-", "&#45;")  # as Graphviz writes the id
            svg = svg.replace(f'<g id="{nid}" class="node">', f'<g id="{nid}" class="node block">')
    return svg


def _inline_svg(svg: str) -> str:
    """The SVG document as an element to inline: no XML declaration, no DOCTYPE."""
    svg = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg)
    return svg.strip()


def html_page(view: View, svg: str, levels: Sequence[tuple[View, str]] = ()) -> str:
    """The page for `view`, whose drawing `svg` is Graphviz's SVG of the same view.

    Args:
        view: the view drawn when the page opens.
        svg: its SVG.
        levels: the same graph's view and SVG at each depth the page can switch to (expand and
            collapse); `view` is used where its depth is among them.
    """
    sub = f"signature {view.signature} · " if view.signature else ""
    facts = (f"{sub}{view.params:,} params ({fmt_count(view.params)}) · blocks drawn to depth {view.depth} "
             f"of {view.max_depth}{' · repeats unrolled' if view.unroll else ''}")
    doc = f"<p>{_e(view.doc)}</p>" if view.doc else ""
    layers = {v.depth: (v, s) for v, s in levels}
    layers[view.depth] = (view, svg)
    items = {i.key: i for v, _ in sorted(layers.values(), key=lambda vs: vs[0].depth) for i in v.items}
    panel = "\n".join(_detail(i) for i in items.values())
    templates = "\n".join(f'<template class="level" data-depth="{d}">{_inline_svg(_mark_blocks(s, v))}</template>'
                          for d, (v, s) in sorted(layers.items()))
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
<div id="view">
<div id="tools">
<button id="fit" title="Fit the drawing to the window">fit</button><button id="one" title="Actual size">1:1</button>
<button id="zin" title="Zoom in (or the wheel)">+</button><button id="zout" title="Zoom out">&minus;</button>
<button id="collapse" title="Fold the deepest open blocks">collapse</button>
<button id="expand" title="Open the next level of blocks (or double-click a block)">expand</button>
<span id="depth"></span>
<input id="q" type="search" placeholder="search node id or op, Enter: next" aria-label="search">
<span id="found"></span>
</div>
<div id="diagram" data-depth="{view.depth}">
{_inline_svg(_mark_blocks(svg, view))}
</div>
</div>
{templates}
<aside id="panel">
<p class="hint" id="hint">Rest the pointer on a node for its arguments; click to pin them.</p>
{panel}
</aside>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""
