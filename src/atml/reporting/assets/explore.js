/* atml explore.js: the report's interactive views (embedding scatter, attention, heatmap, saliency).
 * Plain browser JavaScript, no library and no network: each view's data sits in the page as
 * <script type="application/json"> inside its <div class="atml-view">. Written for atml; MIT licence,
 * as atml. window.atmlViews[id] exposes each view's state, which the browser tests read. */
(function () {
  "use strict";
  var TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"];
  var VIRIDIS = [[68, 1, 84], [72, 35, 116], [64, 67, 135], [52, 94, 141], [41, 120, 142], [32, 144, 140],
                 [34, 167, 132], [68, 190, 112], [121, 209, 81], [189, 222, 38], [253, 231, 37]];
  var MAGMA = [[0, 0, 4], [20, 14, 54], [59, 15, 112], [100, 26, 128], [140, 41, 129], [183, 55, 121],
               [222, 73, 104], [247, 112, 92], [254, 159, 109], [254, 207, 146], [252, 253, 191]];
  var JET = [[0, 0, 128], [0, 0, 255], [0, 128, 255], [0, 255, 255], [128, 255, 128], [255, 255, 0],
             [255, 128, 0], [255, 0, 0], [128, 0, 0]];
  var sheets = 0;
  var TYPES = { uint8: Uint8Array, int16: Int16Array, int32: Int32Array, float32: Float32Array };

  function decode(a) {
    if (!a) { return null; }
    var bin = atob(a.b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    return new TYPES[a.dtype](bytes.buffer);
  }
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    var i = Math.min(stops.length - 2, Math.floor(t)), f = t - i, a = stops[i], b = stops[i + 1];
    return [Math.round(a[0] + (b[0] - a[0]) * f), Math.round(a[1] + (b[1] - a[1]) * f), Math.round(a[2] + (b[2] - a[2]) * f)];
  }
  function el(tag, attrs, parent, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function fmt(v) { return isFinite(v) ? Number(v).toPrecision(3) : "n/a"; }
  function room(root, most) {  // the width a view's canvas may take: the view's own, up to `most` px
    return Math.max(280, Math.min(most, Math.floor((root.clientWidth || 600) - 4)));
  }
  function canvas(parent, w, h) {
    var c = el("canvas", { width: w * (window.devicePixelRatio || 1), height: h * (window.devicePixelRatio || 1) }, parent);
    c.style.width = w + "px"; c.style.height = h + "px";
    var ctx = c.getContext("2d"); ctx.scale(window.devicePixelRatio || 1, window.devicePixelRatio || 1);
    return { node: c, ctx: ctx, w: w, h: h };
  }
  function choices(parent, label, names, pick) {
    var box = el("span", { "class": "atml-choices", role: "group", "aria-label": label }, parent);
    if (label) { el("span", { "class": "atml-label" }, box, label + ": "); }
    var buttons = names.map(function (name, i) {
      var b = el("button", { type: "button", "data-choice": String(i) }, box, name);
      b.addEventListener("click", function () { select(i); });
      return b;
    });
    function select(i) {
      buttons.forEach(function (b, j) { b.setAttribute("aria-pressed", String(i === j)); });
      pick(i);
    }
    return select;
  }
  function local(node, ev) {  // the event's position in the canvas's own pixels (inside its border)
    var r = node.getBoundingClientRect();
    return [ev.clientX - r.left - node.clientLeft, ev.clientY - r.top - node.clientTop];
  }
  function tipAt(tip, host, x, y) {
    tip.style.display = "block";
    var left = x + 14, top = y + 14;
    if (left + tip.offsetWidth > host.clientWidth) { left = Math.max(0, x - tip.offsetWidth - 14); }
    tip.style.left = left + "px"; tip.style.top = top + "px";
  }

  /* Embedding scatter: hover a point for its image, class and prediction; click a class to hide it; wheel to zoom,
   * drag to pan, double-click to reset. */
  function scatter(root, d) {
    var W = room(root, 900), H = Math.round(W * 0.68), PAD = 12;
    var labels = decode(d.labels), thumbs = decode(d.thumbs), pred = decode(d.predicted), kinds = decode(d.kinds);
    var panels = d.panels.map(function (p) { return { name: p.name, xy: decode(p.xy) }; });
    var n = labels.length, hidden = {}, state = { panel: 0, hover: -1, zoom: 1, cx: 0, cy: 0 };
    var bar = el("div", { "class": "atml-bar" }, root);
    var stage = el("div", { "class": "atml-stage" }, root);
    var cv = canvas(stage, W, H);
    var tip = el("div", { "class": "atml-tip", role: "tooltip" }, stage);
    var legend = el("div", { "class": "atml-legend" }, root);
    var bounds, sheetClass = "atml-sheet-" + (++sheets);
    if (d.sheet) {  // the sheet's data URI parsed once, by a style rule, not on every hover
      el("style", {}, document.head, "." + sheetClass + " { background-image: url(\"" + d.sheet.src + "\"); }");
    }
    function fit() {
      var xy = panels[state.panel].xy, x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (var i = 0; i < n; i++) {
        x0 = Math.min(x0, xy[2 * i]); x1 = Math.max(x1, xy[2 * i]); y0 = Math.min(y0, xy[2 * i + 1]); y1 = Math.max(y1, xy[2 * i + 1]);
      }
      var s = Math.min((W - 2 * PAD) / ((x1 - x0) || 1), (H - 2 * PAD) / ((y1 - y0) || 1));
      bounds = { s: s, mx: (x0 + x1) / 2, my: (y0 + y1) / 2 };
      state.zoom = 1; state.cx = 0; state.cy = 0;
    }
    function screen(i) {
      var xy = panels[state.panel].xy, s = bounds.s * state.zoom;
      return [W / 2 + (xy[2 * i] - bounds.mx) * s + state.cx, H / 2 - (xy[2 * i + 1] - bounds.my) * s + state.cy];
    }
    function draw() {
      var c = cv.ctx;
      c.clearRect(0, 0, W, H);
      for (var i = 0; i < n; i++) {
        if (hidden[labels[i]]) { continue; }
        var p = screen(i);
        if (p[0] < -5 || p[1] < -5 || p[0] > W + 5 || p[1] > H + 5) { continue; }
        c.fillStyle = TAB10[labels[i] % 10];
        c.beginPath();
        if (kinds && kinds[i] === 1) {
          c.moveTo(p[0], p[1] - 4.5); c.lineTo(p[0] + 4, p[1] + 3); c.lineTo(p[0] - 4, p[1] + 3); c.closePath();
          c.fill(); c.strokeStyle = "#000"; c.lineWidth = 0.5; c.stroke();
        } else { c.arc(p[0], p[1], 3, 0, 2 * Math.PI); c.fill(); }
      }
      if (state.hover >= 0) {
        var q = screen(state.hover);
        c.strokeStyle = "#000"; c.lineWidth = 1.5; c.beginPath(); c.arc(q[0], q[1], 6, 0, 2 * Math.PI); c.stroke();
      }
      root.parentNode.setAttribute("data-panel", String(state.panel));
    }
    function nearest(x, y) {
      var best = -1, dist = 64;
      for (var i = 0; i < n; i++) {
        if (hidden[labels[i]]) { continue; }
        var p = screen(i), dd = (p[0] - x) * (p[0] - x) + (p[1] - y) * (p[1] - y);
        if (dd < dist) { dist = dd; best = i; }
      }
      return best;
    }
    function show(i, x, y) {
      state.hover = i;
      tip.textContent = "";
      tip.setAttribute("data-point", String(i));
      if (thumbs && d.sheet && thumbs[i] >= 0) {
        var t = thumbs[i], tile = d.sheet.tile, z = 2;  // shown at twice the stored size, pixels kept sharp
        var img = el("div", { "class": "atml-thumb", "data-tile": String(t) }, tip);
        img.style.width = z * tile + "px"; img.style.height = z * tile + "px";
        img.classList.add(sheetClass);
        img.style.backgroundSize = (z * tile * d.sheet.cols) + "px auto";
        img.style.backgroundPosition = (-(t % d.sheet.cols) * z * tile) + "px " + (-Math.floor(t / d.sheet.cols) * z * tile) + "px";
      }
      var text = el("div", { "class": "atml-tiptext" }, tip);
      if (d.names) { el("div", { "class": "atml-name" }, text, d.names[i]); }
      else if (kinds) { el("div", {}, text, d.kind_names[kinds[i]] + " #" + i); } else { el("div", {}, text, "point #" + i); }
      el("div", { "class": "atml-true" }, text, "class: " + d.classes[labels[i]]);
      if (pred && pred[i] >= 0) {
        el("div", { "class": "atml-pred" + (pred[i] === labels[i] ? "" : " wrong") }, text,
           "predicted: " + d.classes[pred[i]] + (d.predicted_by ? " (" + d.predicted_by + ")" : ""));
      }
      if (d.captions && d.captions[i]) { el("div", { "class": "atml-caption" }, text, "\u201c" + d.captions[i] + "\u201d"); }
      tipAt(tip, stage, x, y);
      draw();
    }
    function hide() { state.hover = -1; tip.style.display = "none"; tip.removeAttribute("data-point"); draw(); }
    var drag = null;
    cv.node.addEventListener("mousemove", function (ev) {
      var m = local(cv.node, ev);
      if (drag) {
        state.cx = drag.cx + m[0] - drag.x; state.cy = drag.cy + m[1] - drag.y; drag.moved = true; draw(); return;
      }
      var i = nearest(m[0], m[1]);
      if (i >= 0) { show(i, m[0], m[1]); } else if (state.hover >= 0) { hide(); }
    });
    cv.node.addEventListener("mouseleave", function () { drag = null; hide(); });
    cv.node.addEventListener("mousedown", function (ev) {
      var m = local(cv.node, ev); drag = { x: m[0], y: m[1], cx: state.cx, cy: state.cy };
    });
    window.addEventListener("mouseup", function () { drag = null; });
    cv.node.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var m = local(cv.node, ev), f = ev.deltaY < 0 ? 1.25 : 0.8;
      var z = Math.max(0.5, Math.min(60, state.zoom * f)); f = z / state.zoom;
      state.cx = (m[0] - W / 2) - ((m[0] - W / 2) - state.cx) * f; state.cy = (m[1] - H / 2) - ((m[1] - H / 2) - state.cy) * f;
      state.zoom = z; draw();
    }, { passive: false });
    cv.node.addEventListener("dblclick", function () { fit(); draw(); });
    d.classes.forEach(function (name, c) {
      if (!labels.some(function (l) { return l === c; })) { return; }
      var b = el("button", { type: "button", "data-class": String(c), "aria-pressed": "true" }, legend);
      var sw = el("span", { "class": "atml-swatch" }, b); sw.style.background = TAB10[c % 10];
      el("span", {}, b, name);
      b.addEventListener("click", function () {
        hidden[c] = !hidden[c]; b.setAttribute("aria-pressed", String(!hidden[c])); hide();
      });
    });
    if (kinds && d.kind_names.length > 1) {
      el("span", { "class": "atml-label" }, legend, "\u25cf " + d.kind_names[0] + "  \u25b2 " + d.kind_names[1]);
    }
    el("span", { "class": "atml-hint" }, root, "Hover a point for its image; click a class to hide it; scroll to zoom, drag to pan, double-click to reset.");
    choices(bar, "panel", panels.map(function (p) { return p.name; }), function (i) { state.panel = i; fit(); hide(); });
    root.querySelector(".atml-choices button").click();
    return {
      state: state, hidden: hidden, redraw: draw,
      screen: function (i) { var p = screen(i); return [p[0], p[1]]; },
      canvas: cv.node
    };
  }

  /* Attention: click a patch to see the row of the attention matrix it queries (CLS by default), per layer and head,
   * or the rollout through all layers. */
  function attention(root, d) {
    var SIZE = room(root, 560), G = d.grid, P = G * G, T = d.prefix + P, L = d.layers.length, Hd = d.per_head ? d.heads : 1;
    var imgs = d.images.map(function (im) {
      var pic = new Image(); pic.src = im.src;
      return { name: im.name, caption: im.caption, pic: pic, maps: decode(im.maps), scale: decode(im.scale),
               roll: decode(im.rollout), rollScale: decode(im.rollout_scale) };
    });
    var state = { image: 0, layer: L - 1, head: -1, query: 0, mode: "attention", overlay: null };
    var bar = el("div", { "class": "atml-bar" }, root);
    var bar2 = el("div", { "class": "atml-bar" }, root);
    var stage = el("div", { "class": "atml-stage" }, root);
    var cv = canvas(stage, SIZE, SIZE);
    var info = el("div", { "class": "atml-info", "aria-live": "polite" }, root);
    var off = document.createElement("canvas"); off.width = G; off.height = G;
    function row(im, layer, head, query) {  // attention of token `query` over the patches, dequantised
      var base = ((layer * Hd + head) * T + query) * P, s = im.scale[(layer * Hd + head) * T + query] / 255, out = new Float32Array(P);
      for (var k = 0; k < P; k++) { out[k] = im.maps[base + k] * s; }
      return out;
    }
    function values() {
      var im = imgs[state.image], v;
      if (state.mode === "rollout") {
        v = new Float32Array(P); var s = im.rollScale[state.query] / 255;
        for (var k = 0; k < P; k++) { v[k] = im.roll[state.query * P + k] * s; }
      } else if (state.head >= 0 || Hd === 1) {
        v = row(im, state.layer, Math.max(0, state.head), state.query);
      } else {
        v = new Float32Array(P);
        for (var h = 0; h < Hd; h++) { var r = row(im, state.layer, h, state.query); for (var j = 0; j < P; j++) { v[j] += r[j] / Hd; } }
      }
      var sum = 0; for (var q = 0; q < P; q++) { sum += v[q]; }
      for (var z = 0; z < P; z++) { v[z] = sum > 0 ? v[z] / sum : 1 / P; }  // over the patches, as the static maps
      return v;
    }
    function draw() {
      var im = imgs[state.image], c = cv.ctx, v = values();
      state.overlay = v;
      c.clearRect(0, 0, SIZE, SIZE);
      c.filter = "grayscale(1)"; c.drawImage(im.pic, 0, 0, SIZE, SIZE); c.filter = "none";
      var o = off.getContext("2d"), data = o.createImageData(G, G);
      for (var k = 0; k < P; k++) {
        var a = Math.max(0, Math.min(1, Math.log(Math.max(v[k] * P, 1)) / Math.log(d.full)));
        data.data[4 * k] = 255; data.data[4 * k + 3] = Math.round(191 * a);
      }
      o.putImageData(data, 0, 0);
      c.imageSmoothingEnabled = true; c.drawImage(off, 0, 0, SIZE, SIZE);
      if (state.query >= d.prefix) {
        var p = state.query - d.prefix, cell = SIZE / G;
        c.strokeStyle = "#00e5ff"; c.lineWidth = 2; c.strokeRect((p % G) * cell, Math.floor(p / G) * cell, cell, cell);
      }
      var who = state.query < d.prefix ? (state.query === 0 ? "CLS" : "prefix token " + state.query)
        : "patch (row " + (Math.floor((state.query - d.prefix) / G) + 1) + ", col " + ((state.query - d.prefix) % G + 1) + ")";
      var what = state.mode === "rollout" ? "rollout through all " + d.layers[L - 1] + " layers"
        : "layer " + d.layers[state.layer] + ", " + (state.head < 0 ? (Hd === 1 && !d.per_head ? "mean of the heads (stored)" : "mean of " + Hd + " heads") : "head " + (state.head + 1));
      var peak = 0; for (var q = 1; q < P; q++) { if (v[q] > v[peak]) { peak = q; } }
      info.textContent = im.name + (im.caption ? " (" + im.caption + ")" : "") + ": what " + who + " attends to, " + what +
        "; its top patch (row " + (Math.floor(peak / G) + 1) + ", col " + (peak % G + 1) + ") gets " + fmt(v[peak] * 100) + "% (uniform " + fmt(100 / P) + "%).";
      root.parentNode.setAttribute("data-query", String(state.query)); root.parentNode.setAttribute("data-layer", String(d.layers[state.layer]));
      root.parentNode.setAttribute("data-head", state.head < 0 ? "mean" : String(state.head + 1)); root.parentNode.setAttribute("data-mode", state.mode);
      root.parentNode.setAttribute("data-image", String(state.image));
      var rollout = state.mode === "rollout";  // through every layer and the mean of the heads: no layer, no head
      slider.disabled = rollout;
      root.querySelectorAll("[aria-label=head] button").forEach(function (b) { b.disabled = rollout; });
      cls.textContent = state.query === 0 ? "query: CLS" : "query: " + who + " (click: back to CLS)";
    }
    imgs.forEach(function (im) { im.pic.addEventListener("load", draw); });
    choices(bar, "image", imgs.map(function (im) { return im.name; }), function (i) { state.image = i; draw(); });
    var slider = el("input", { type: "range", min: "0", max: String(L - 1), value: String(L - 1), "aria-label": "layer" });
    var layerBox = el("label", { "class": "atml-label" }, bar2, "layer ");
    layerBox.appendChild(slider);
    var layerName = el("span", { "class": "atml-label" }, layerBox, " " + d.layers[L - 1]);
    slider.addEventListener("input", function () { state.layer = Number(slider.value); layerName.textContent = " " + d.layers[state.layer]; draw(); });
    var heads = ["mean"]; for (var h = 0; h < Hd && d.per_head; h++) { heads.push(String(h + 1)); }
    choices(bar2, "head", heads, function (i) { state.head = i - 1; draw(); });
    choices(bar2, "show", ["attention", "rollout"], function (i) { state.mode = i ? "rollout" : "attention"; draw(); });
    var cls = el("button", { type: "button", "class": "atml-cls" }, bar2, "query: CLS");
    cls.addEventListener("click", function () { state.query = 0; draw(); });
    cv.node.addEventListener("click", function (ev) {
      var m = local(cv.node, ev), cell = SIZE / G;
      var r = Math.min(G - 1, Math.floor(m[1] / cell)), c = Math.min(G - 1, Math.floor(m[0] / cell));
      state.query = d.prefix + r * G + c; draw();
    });
    el("span", { "class": "atml-hint" }, root, "Click a patch to see what it attends to; the slider picks the layer. Red: share of the attention, transparent at or below uniform, opaque at " + d.full + "x it.");
    root.querySelectorAll(".atml-choices").forEach(function (g) { g.querySelector("button").click(); });
    return {
      state: state, canvas: cv.node,
      patchCentre: function (p) { var cell = SIZE / G; return [(p % G + 0.5) * cell, (Math.floor(p / G) + 0.5) * cell]; },
      overlay: function () { return Array.prototype.slice.call(state.overlay); }
    };
  }

  /* Heatmap (CKA between layers): hover a cell to read both layers and the value. */
  function heatmap(root, d) {
    var panels = d.panels.map(function (p) { return { p: p, values: decode(p.values) }; });
    var state = { panel: 0, row: -1, col: -1, ticks: { rows: [], cols: [] } };
    var bar = el("div", { "class": "atml-bar" }, root);
    var stage = el("div", { "class": "atml-stage" }, root);
    var ML = 120, MB = 92;  // room for the row names and title (left), the column names and title (below)
    var SIZE = Math.min(560, room(root, 900) - ML), cv = canvas(stage, ML + SIZE, SIZE + MB), CMAP = d.cmap === "magma" ? MAGMA : VIRIDIS;
    function top(r, R) { return d.origin === "lower" ? R - 1 - r : r; }  // the screen row of data row r
    var tip = el("div", { "class": "atml-tip", role: "tooltip" }, stage);
    function geom() { var p = panels[state.panel].p, cell = SIZE / Math.max(p.rows.length, p.cols.length); return { p: p, cell: cell }; }
    function every(count, cell) { return Math.max(1, Math.ceil(13 / cell)); }  // label every n-th so names never overlap
    function short(name) { name = String(name); return name.length > 16 ? name.slice(0, 15) + "\u2026" : name; }
    function axes(g, c, R, C) {
      c.fillStyle = "#1d2330"; c.font = "11px system-ui, sans-serif"; state.ticks = { rows: [], cols: [] };
      c.textAlign = "right"; c.textBaseline = "middle";
      for (var r = 0, n = every(R, g.cell); r < R; r += n) {
        c.fillText(short(g.p.rows[r]), ML - 5, (top(r, R) + 0.5) * g.cell); state.ticks.rows.push(g.p.rows[r]);
      }
      for (var k = 0, m = every(C, g.cell); k < C; k += m) {
        c.save(); c.translate(ML + (k + 0.5) * g.cell, SIZE + 5); c.rotate(-Math.PI / 4);
        c.fillText(short(g.p.cols[k]), 0, 0); c.restore(); state.ticks.cols.push(g.p.cols[k]);
      }
      c.font = "12px system-ui, sans-serif"; c.textAlign = "center"; c.textBaseline = "alphabetic";
      c.fillText(g.p.col_label, ML + C * g.cell / 2, SIZE + MB - 4);
      c.save(); c.translate(12, R * g.cell / 2); c.rotate(-Math.PI / 2); c.fillText(g.p.row_label, 0, 0); c.restore();
    }
    function draw() {
      var g = geom(), v = panels[state.panel].values, c = cv.ctx, R = g.p.rows.length, C = g.p.cols.length;
      c.clearRect(0, 0, ML + SIZE, SIZE + MB);
      for (var r = 0; r < R; r++) {
        for (var k = 0; k < C; k++) {
          var x = v[r * C + k], rgb = isFinite(x) ? ramp(CMAP, (x - d.vmin) / ((d.vmax - d.vmin) || 1)) : [200, 200, 200];
          c.fillStyle = "rgb(" + rgb.join(",") + ")"; c.fillRect(ML + k * g.cell, top(r, R) * g.cell, Math.ceil(g.cell), Math.ceil(g.cell));
        }
      }
      if (state.row >= 0) { c.strokeStyle = "#00e5ff"; c.lineWidth = 2; c.strokeRect(ML + state.col * g.cell, top(state.row, R) * g.cell, g.cell, g.cell); }
      axes(g, c, R, C);
      root.parentNode.setAttribute("data-panel", String(state.panel));
    }
    cv.node.addEventListener("mousemove", function (ev) {
      var g = geom(), m = local(cv.node, ev), k = Math.floor((m[0] - ML) / g.cell), R = g.p.rows.length;
      var r = Math.floor(m[1] / g.cell); r = r < R ? top(r, R) : R;
      if (r < 0 || k < 0 || r >= g.p.rows.length || k >= g.p.cols.length) { state.row = -1; tip.style.display = "none"; draw(); return; }
      var value = panels[state.panel].values[r * g.p.cols.length + k];
      state.row = r; state.col = k;
      tip.textContent = "";
      tip.setAttribute("data-row", g.p.rows[r]); tip.setAttribute("data-col", g.p.cols[k]); tip.setAttribute("data-value", String(value));
      el("div", {}, tip, g.p.row_label + ": " + g.p.rows[r]);
      el("div", {}, tip, g.p.col_label + ": " + g.p.cols[k]);
      el("div", { "class": "atml-value" }, tip, d.value_name + " = " + (isFinite(value) ? value.toFixed(3) : "n/a"));
      tipAt(tip, stage, m[0], m[1]); draw();
    });
    cv.node.addEventListener("mouseleave", function () { state.row = -1; tip.style.display = "none"; draw(); });
    var scale = el("div", { "class": "atml-scale" }, root);
    el("span", {}, scale, d.value_name + " " + d.vmin);
    var grad = el("span", { "class": "atml-gradient" }, scale);
    grad.style.background = "linear-gradient(to right," + CMAP.map(function (c) { return "rgb(" + c.join(",") + ")"; }).join(",") + ")";
    el("span", {}, scale, String(d.vmax));
    el("span", { "class": "atml-hint" }, root, "Hover a cell for both layers and the value; layers in forward order, " + (d.origin === "lower" ? "the first at the bottom left." : "the first at the top left."));
    choices(bar, "panel", panels.map(function (p) { return p.p.name; }), function (i) { state.panel = i; draw(); });
    root.querySelector(".atml-choices button").click();
    return {
      state: state, canvas: cv.node,
      cellCentre: function (r, k) { var g = geom(); return [ML + (k + 0.5) * g.cell, (top(r, g.p.rows.length) + 0.5) * g.cell]; },
      ticks: function () { return state.ticks; }
    };
  }

  /* Saliency: choose a model's method and an image; the map over the image with its deletion/insertion AUC. */
  function saliency(root, d) {
    var SIZE = room(root, 560), entries = d.entries.map(function (e) { return { e: e, maps: decode(e.maps) }; });
    var pics = d.images.map(function (src) { var p = new Image(); p.src = src; return p; });
    var state = { entry: 0, image: 0, alpha: 0.5 };
    var bar = el("div", { "class": "atml-bar" }, root), bar2 = el("div", { "class": "atml-bar" }, root);
    var stage = el("div", { "class": "atml-stage" }, root);
    var cv = canvas(stage, SIZE, SIZE);
    var info = el("div", { "class": "atml-info", "aria-live": "polite" }, root);
    function draw() {
      var e = entries[state.entry], shape = e.e.maps.shape, h = shape[1], w = shape[2], c = cv.ctx;
      var off = document.createElement("canvas"); off.width = w; off.height = h;
      var o = off.getContext("2d"), data = o.createImageData(w, h), base = state.image * h * w;
      for (var k = 0; k < h * w; k++) {
        var rgb = ramp(JET, e.maps[base + k] / 255);
        data.data[4 * k] = rgb[0]; data.data[4 * k + 1] = rgb[1]; data.data[4 * k + 2] = rgb[2]; data.data[4 * k + 3] = Math.round(255 * state.alpha);
      }
      o.putImageData(data, 0, 0);
      c.clearRect(0, 0, SIZE, SIZE); c.drawImage(pics[state.image], 0, 0, SIZE, SIZE);
      c.imageSmoothingEnabled = true; c.drawImage(off, 0, 0, SIZE, SIZE);
      info.textContent = e.e.model + ", " + e.e.method + ", image " + (state.image + 1) + ": deletion AUC " + fmt(e.e.deletion[state.image]) +
        " (lower is more faithful), insertion AUC " + fmt(e.e.insertion[state.image]) + " (higher); over all scored images " +
        fmt(e.e.deletion_mean) + " / " + fmt(e.e.insertion_mean) + ".";
      root.parentNode.setAttribute("data-entry", String(state.entry)); root.parentNode.setAttribute("data-image", String(state.image));
    }
    pics.forEach(function (p) { p.addEventListener("load", draw); });
    choices(bar, "map", entries.map(function (e) { return e.e.model + ": " + e.e.method; }), function (i) { state.entry = i; draw(); });
    choices(bar2, "image", pics.map(function (_p, i) { return String(i + 1); }), function (i) { state.image = i; draw(); });
    var slider = el("input", { type: "range", min: "0", max: "100", value: "50", "aria-label": "map opacity" });
    var lab = el("label", { "class": "atml-label" }, bar2, " map opacity "); lab.appendChild(slider);
    slider.addEventListener("input", function () { state.alpha = Number(slider.value) / 100; draw(); });
    el("span", { "class": "atml-hint" }, root, "Pick a method and an image; the map (jet: blue low, red high, each map scaled to its own maximum) lies over the image.");
    root.querySelectorAll(".atml-choices").forEach(function (g) { g.querySelector("button").click(); });
    return { state: state, canvas: cv.node };
  }

  var KINDS = { scatter: scatter, attention: attention, heatmap: heatmap, saliency: saliency };
  window.atmlViews = window.atmlViews || {};
  function start() {
    document.querySelectorAll("div.atml-view:not([data-ready])").forEach(function (root) {
      var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
      // The data's shape is view-schemas.json's (generated from atml/views.py); a page that wants it checked
      // before drawing (the browser tests, with Ajv) defines atmlCheckView, which throws on a mismatch.
      if (typeof window.atmlCheckView === "function") { window.atmlCheckView(data); }
      var body = el("div", { "class": "atml-body" }, root);
      window.atmlViews[root.id] = KINDS[data.kind](body, data);
      root.setAttribute("data-ready", "true");
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
