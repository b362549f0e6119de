"""The style sheet and script of the HTML viewer (`page.html_page` writes them into the page).

How the script folds and opens blocks one by one without a layout engine in the page:

- The page holds Graphviz's drawing at every depth (``template.level``), each edge with the id
  ``nn-edge/<i>`` of the `i`-th edge of that depth's view, and one drawing of every block
  folded on its own (``template#nn-blocks``: the same node Graphviz draws for a folded call).
- ``nn-data`` (JSON) lists the clusters (parent, depth, the folded node that stands for each)
  and, per depth, each drawn item's cluster and each edge's ends, tensor and label parts.
- The state is the set of folded clusters. The page shows the shallowest depth that draws
  every cluster left open; a cluster that is folded there is hidden with all it holds, the
  block's node is put in its place, and the edges that crossed its border are drawn again to
  it: one per tensor and end, labelled as Graphviz labels the same edge of the same view
  built with that cluster folded (`view.build_view` with ``folded``), so what is shown is what
  `nnspec render` would draw, in the unfolded layout. Where the state is a depth, the page
  shows Graphviz's own drawing of that depth.
"""

from __future__ import annotations

__all__ = ["SCRIPT", "STYLE"]

STYLE = """
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
#found, #depth { color: #555; }
#found { min-width: 6em; }
body:not(.js) #tools { display: none; }
#diagram { flex: 1; overflow: auto; padding: 8px; }
body.js #diagram { overflow: hidden; padding: 0; cursor: grab; }
#diagram svg { display: block; }
body.js #diagram svg { width: 100%; height: 100%; }
#diagram .gone { display: none; }
g.node.match path, g.node.match polygon, g.node.match ellipse { stroke: #ff7f0e; stroke-width: 4; }
body.searching g.node:not(.match) { opacity: 0.35; }
g.cluster.foldable { cursor: zoom-out; }
g.cluster.foldable:hover > g > a > path, g.cluster.foldable:hover > g > a > polygon { stroke: #1f77b4;
  stroke-width: 2.5; }
g.node.block.openable { cursor: zoom-in; }
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

SCRIPT = """
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var body = document.body, diagram = document.getElementById("diagram");
  var data = JSON.parse(document.getElementById("nn-data").textContent);
  var groups = data.groups, across = data.rankdir === "LR";
  var levels = Object.keys(data.levels).map(Number).sort(function (a, b) { return a - b; });
  var blocks = document.getElementById("nn-blocks");
  var closed = new Set(), base = null, drawn = [], folds = [];
  var svg = null, home = null, box = null, pinned = null, matches = [], at = -1, dragged = false;
  body.classList.add("js");

  // --- pan and zoom ------------------------------------------------------------------------
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

  // --- details ---------------------------------------------------------------------------------
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
  function groupOfBlock(id) {  // nn-block/encoder.ff -> cluster/encoder.ff, where the page can open it
    var key = "cluster/" + id.slice(3).replace(/^block[/]/, "");
    return id.indexOf("nn-block/") === 0 && groups[key] ? key : null;
  }
  function wireNode(g) {
    if (!detailOf(g.id)) { return false; }
    var group = g.classList.contains("block") ? groupOfBlock(g.id) : null;
    g.classList.toggle("openable", !!group);
    g.addEventListener("mouseenter", function () { if (!pinned) { show(g.id); } });
    g.addEventListener("mouseleave", function () { if (!pinned) { show(null); } });
    g.addEventListener("click", function (ev) {
      ev.preventDefault(); ev.stopPropagation();
      if (dragged) { return; }
      if (group) { openBlock(g.id); return; }  // a folded block opens where it is clicked
      pinned = pinned === g.id ? null : g.id;
      show(pinned || g.id);
    });
    return true;
  }

  // --- which drawing, and what is folded in it -------------------------------------------------
  function isShown(key) {  // a cluster whose enclosing clusters are all open
    for (var k = groups[key].parent; k; k = groups[k].parent) { if (closed.has(k)) { return false; } }
    return true;
  }
  function foldOf(groupKey) {  // the outermost folded cluster around (or at) a cluster, or null
    var found = null;
    for (var k = groupKey; k && groups[k]; k = groups[k].parent) { if (closed.has(k)) { found = k; } }
    return found;
  }
  function levelFor() {  // the shallowest drawing with every shown open cluster drawn open
    var deepest = 0;
    Object.keys(groups).forEach(function (k) {
      if (!closed.has(k) && isShown(k)) { deepest = Math.max(deepest, groups[k].depth); }
    });
    for (var i = 0; i < levels.length; i++) { if (levels[i] >= deepest) { return levels[i]; } }
    return levels[levels.length - 1];
  }
  function load(level) {
    var t = document.querySelector('template.level[data-depth="' + level + '"]');
    diagram.replaceChildren(t.content.cloneNode(true));
    base = level;
    svg = diagram.querySelector("svg");
    var vb = svg.viewBox.baseVal;
    home = {x: vb.x, y: vb.y, w: vb.width, h: vb.height};
    svg.removeAttribute("width"); svg.removeAttribute("height");
    fit();
    diagram.querySelectorAll("g.node").forEach(wireNode);
    diagram.querySelectorAll("g.cluster").forEach(function (g) {
      var key = g.id.slice(3);
      if (!groups[key]) { return; }
      g.classList.add("foldable");
      g.addEventListener("click", function (ev) {
        ev.preventDefault(); ev.stopPropagation();
        if (!dragged) { fold(key); }
      });
    });
  }
  function apply() {
    var level = levelFor(), moved = level !== base;
    if (moved) { load(level); }
    diagram.querySelectorAll(".nn-overlay").forEach(function (el) { el.remove(); });
    diagram.querySelectorAll(".gone").forEach(function (el) { el.classList.remove("gone"); });
    overlay(data.levels[String(level)]);
    if (pinned && !visible(pinned)) { pinned = null; }
    show(pinned);
    body.dataset.bound = String(Array.from(diagram.querySelectorAll("g.node:not(.gone)")).filter(function (g) {
      return !!detailOf(g.id); }).length);
    body.dataset.depth = String(base);
    body.dataset.folded = folds.join(" ");
    var extra = folds.length ? " · " + folds.length + " folded" : "";
    document.getElementById("depth").textContent = "depth " + base + " of " + levels[levels.length - 1] + extra;
    search(document.getElementById("q").value);
    return moved;
  }
  function visible(id) { var g = document.getElementById(id); return !!g && !g.classList.contains("gone"); }

  // --- folding a cluster in the drawing --------------------------------------------------------
  function el(tag, attrs, parent) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function overlay(lv) {
    var layer = el("g", {"class": "nn-overlay"}, svg.querySelector("g.graph"));
    var here = {};  // the clusters drawn at this level
    lv.groups.forEach(function (k) { here[k] = true; });
    function rep(item) { var g = lv.items[item], f = g && foldOf(g); return f ? groups[f].block : item; }
    var boxes = {};
    folds = lv.groups.filter(function (k) { return foldOf(k) === k; });
    folds.forEach(function (k) { boxes[groups[k].block] = place(k, layer); });
    lv.groups.forEach(function (k) { if (foldOf(k)) { document.getElementById("nn-" + k).classList.add("gone"); } });
    Object.keys(lv.items).forEach(function (item) {
      if (rep(item) !== item) { document.getElementById("nn-" + item).classList.add("gone"); }
    });
    var redrawn = new Map();
    drawn = [];
    lv.edges.forEach(function (e, i) {
      var tail = rep(e[0]), head = rep(e[1]), g = document.getElementById("nn-edge/" + i);
      if (tail === e[0] && head === e[1]) { drawn.push(label(tail, head, e)); return; }
      g.classList.add("gone");
      if (tail === head) { return; }  // inside one folded block
      var key = tail + " " + e[2] + " " + head;
      if (!redrawn.has(key)) { redrawn.set(key, {tail: tail, head: head, e: e, ends: ends(g)}); }
    });
    var sides = {};  // box -> side -> the edges that meet it there
    redrawn.forEach(function (r) {
      [[r.tail, "out"], [r.head, "in"]].forEach(function (end) {
        if (!boxes[end[0]]) { return; }
        var side = end[0] + " " + end[1];
        (sides[side] = sides[side] || []).push(r);
      });
    });
    Object.keys(sides).forEach(function (side) {
      var parts = side.split(" "), b = boxes[parts[0]], out = parts[1] === "out", rs = sides[side];
      function other(r) { var p = out ? r.ends.head : r.ends.tail; return across ? p.y : p.x; }
      rs.sort(function (a, c) { return other(a) - other(c); });
      rs.forEach(function (r, j) {
        var f = (j + 1) / (rs.length + 1), p;
        if (across) { p = {x: out ? b.x + b.w : b.x, y: b.y + b.h * (0.2 + 0.6 * f)}; }
        else { p = {x: b.x + b.w * (0.2 + 0.6 * f), y: out ? b.y + b.h : b.y}; }
        r.ends[out ? "tail" : "head"] = p;
      });
    });
    redrawn.forEach(function (r) {
      var l = label(r.tail, r.head, r.e);
      drawn.push(l);
      edge(layer, r, l);
    });
  }
  function place(k, layer) {  // the folded block's node where cluster k was; its box
    var c = document.getElementById("nn-" + k).getBBox();
    var node = blocks.content.getElementById("nn-" + groups[k].block).cloneNode(true);
    layer.appendChild(node);
    var b = node.getBBox(), s = Math.min(1, c.width / b.width, c.height / b.height);
    var cx = c.x + c.width / 2, cy = c.y + c.height / 2;
    node.setAttribute("transform", "translate(" + cx + " " + cy + ") scale(" + s + ") translate(" +
                      -(b.x + b.width / 2) + " " + -(b.y + b.height / 2) + ")");
    wireNode(node);
    return {x: cx - s * b.width / 2, y: cy - s * b.height / 2, w: s * b.width, h: s * b.height};
  }
  function ends(g) {  // where an edge Graphviz drew leaves its tail and reaches its head
    var path = g.querySelector("path"), tip = g.querySelector("polygon");
    var a = path.getPointAtLength(0), z = path.getPointAtLength(path.getTotalLength()), head = {x: z.x, y: z.y};
    if (tip) {
      var far = -1;
      Array.from(tip.points).forEach(function (p) {
        var d = (p.x - z.x) * (p.x - z.x) + (p.y - z.y) * (p.y - z.y);
        if (d > far) { far = d; head = {x: p.x, y: p.y}; }
      });
    }
    return {tail: {x: a.x, y: a.y}, head: head};
  }
  function label(tail, head, e) {  // an edge's ends and label parts, as Graphviz labels it in that view
    return {tail: tail, head: head, port: tail === e[0] ? e[4] : "", shape: e[3], ports: head === e[1] ? e[5] : ""};
  }
  function lines(l) { return [[l.port, l.shape].filter(Boolean).join(" "), l.ports ? "→ " + l.ports : ""]; }
  function edge(layer, r, l) {
    var a = r.ends.tail, z = r.ends.head;
    var dx = z.x - a.x, dy = z.y - a.y, n = Math.hypot(dx, dy) || 1;
    var bend = Math.max(Math.abs(across ? dx : dy) / 2, 12);
    var c1 = across ? {x: a.x + bend, y: a.y} : {x: a.x, y: a.y + bend};
    var c2 = across ? {x: z.x - bend, y: z.y} : {x: z.x, y: z.y - bend};
    var ux = z.x - c2.x, uy = z.y - c2.y, u = Math.hypot(ux, uy);
    if (u < 1e-6) { ux = dx / n; uy = dy / n; } else { ux /= u; uy /= u; }
    var bx = z.x - 7 * ux, by = z.y - 7 * uy;  // the arrowhead's base (arrowsize 0.7)
    var g = el("g", {"class": "edge", "data-tail": r.tail, "data-head": r.head}, layer);
    el("path", {fill: "none", stroke: "#666666", d: "M" + a.x + "," + a.y + "C" + c1.x + "," + c1.y + " " +
                c2.x + "," + c2.y + " " + bx + "," + by}, g);
    el("polygon", {fill: "#666666", stroke: "#666666", points: [bx + 2.45 * uy, by - 2.45 * ux, z.x, z.y,
                   bx - 2.45 * uy, by + 2.45 * ux].join(" ")}, g);
    var mx = (a.x + 3 * c1.x + 3 * c2.x + bx) / 8, my = (a.y + 3 * c1.y + 3 * c2.y + by) / 8;
    var font = {"text-anchor": "start", x: mx + 4, "font-family": "Helvetica,Arial,sans-serif", "font-size": "9.00",
                fill: "#333333"};
    var rows = [[[l.port, "italic"], [l.shape, "normal"]], [[l.ports && "→ " + l.ports, "italic"]]];
    rows.filter(function (row) { return row.some(function (s) { return s[0]; }); }).forEach(function (row, j) {
      var t = el("text", Object.assign({y: my + 9 * j}, font), g);
      row.filter(function (s) { return s[0]; }).forEach(function (s, k) {
        el("tspan", {"font-style": s[1]}, t).textContent = (k ? " " : "") + s[0];
      });
    });
  }

  // --- the state -------------------------------------------------------------------------------
  function setDepth(d) {
    if (levels.indexOf(d) < 0) { return false; }
    closed = new Set(Object.keys(groups).filter(function (k) { return groups[k].depth > d; }));
    apply();
    return true;
  }
  function step(by) {
    var i = levels.indexOf(base) + by;
    if (i >= 0 && i < levels.length) { setDepth(levels[i]); }
  }
  function fold(key) {  // "cluster/encoder" or "encoder"
    key = groups[key] ? key : "cluster/" + key;
    if (!groups[key] || closed.has(key)) { return false; }
    closed.add(key);
    apply();
    return true;
  }
  function openBlock(id) {  // "nn-block/encoder", "block/encoder" or "encoder"
    var key = groupOfBlock(id.indexOf("nn-") === 0 ? id : "nn-block/" + id.replace(/^block[/]/, ""));
    if (!key) { return false; }
    for (var k = key; k; k = groups[k].parent) { closed.delete(k); }
    if (pinned === id) { pinned = null; }
    if (apply()) { center(document.getElementById("nn-" + key)); }
    return true;
  }

  // --- search ----------------------------------------------------------------------------------
  function search(q) {
    q = q.trim().toLowerCase();
    matches = []; at = -1;
    diagram.querySelectorAll("g.node:not(.gone)").forEach(function (g) {
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

  // --- controls --------------------------------------------------------------------------------
  var q = document.getElementById("q");
  q.addEventListener("input", function () { search(q.value); });
  q.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { ev.preventDefault(); next(); } });
  document.getElementById("fit").addEventListener("click", fit);
  document.getElementById("one").addEventListener("click", function () {
    var r = svg.getBoundingClientRect(); setBox({x: box.x, y: box.y, w: r.width, h: r.height}); });
  document.getElementById("zin").addEventListener("click", function () { zoom(1.25); });
  document.getElementById("zout").addEventListener("click", function () { zoom(0.8); });
  document.getElementById("foldall").addEventListener("click", function () { setDepth(levels[0]); });
  document.getElementById("collapse").addEventListener("click", function () { step(-1); });
  document.getElementById("expand").addEventListener("click", function () { step(1); });
  document.getElementById("openall").addEventListener("click", function () { setDepth(levels[levels.length - 1]); });
  diagram.addEventListener("wheel", function (ev) {
    ev.preventDefault(); zoom(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX, ev.clientY); }, {passive: false});
  var drag = null;
  diagram.addEventListener("mousedown", function (ev) {
    drag = {x: ev.clientX, y: ev.clientY, box: box}; dragged = false; });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) { return; }
    dragged = dragged || Math.abs(ev.clientX - drag.x) + Math.abs(ev.clientY - drag.y) > 4;
    var r = svg.getBoundingClientRect(), s = Math.max(box.w / r.width, box.h / r.height);
    setBox({x: drag.box.x - (ev.clientX - drag.x) * s, y: drag.box.y - (ev.clientY - drag.y) * s,
            w: drag.box.w, h: drag.box.h});
  });
  window.nnspec = {
    search: search, next: next, setDepth: setDepth, step: step, fold: fold, openBlock: openBlock, fit: fit, zoom: zoom,
    matches: function () { return matches.map(function (g) { return g.id; }); },
    folded: function () { return folds.slice(); },
    nodes: function () {  // the items shown, by key
      return Array.from(diagram.querySelectorAll("g.node:not(.gone)")).filter(function (g) {
        return !!detailOf(g.id); }).map(function (g) { return g.id.slice(3); });
    },
    edges: function () { return drawn.map(function (l) { return [l.tail, l.head].concat(lines(l)); }); }
  };
  function fromHash() {
    var key = decodeURIComponent(location.hash.slice(1));
    if (key && detailOf("nn-" + key)) { pinned = "nn-" + key; show(pinned); }
  }
  window.addEventListener("hashchange", fromHash);
  setDepth(Number(diagram.dataset.depth));
  fromHash();
})();
"""
