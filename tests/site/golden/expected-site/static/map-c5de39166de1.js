// The map page: every live feature as one WebGL point, cluster names that follow the zoom level,
// deep links (#feature=N, #cluster=ID, ?q=text). Labels are data, so they only ever reach the DOM
// as text, and reach Plotly with <, > and & escaped (Plotly reads a little HTML in its labels).
(function () {
  "use strict";
  var A = window.ATLAS = window.ATLAS || {};
  var conf = JSON.parse(document.getElementById("atlas-config").textContent);
  var M = window.ATLAS_MAP;
  A.conf = conf;
  A.featureHref = function (n) { return conf.featureDir + Math.floor(n / conf.shardSize) + "/" + n + ".html"; };
  A.clusterHref = function (id) { return conf.clusterDir + id + ".html"; };
  var gd = document.getElementById("map");
  if (!gd || !M || !window.Plotly) return;

  var C = M.clusters; // [cluster_id, level, parent index, name, size, x, y]
  var n = M.ids.length;
  var idToPoint = new Map();
  var clusterIndex = new Map();
  for (var i = 0; i < n; i++) idToPoint.set(M.ids[i], i);
  for (var c = 0; c < C.length; c++) clusterIndex.set(C[c][0], c);
  function ancestorAt(ci, level) {
    while (ci >= 0 && C[ci][1] > level) ci = C[ci][2];
    return ci >= 0 && C[ci][1] === level ? ci : -1;
  }
  function esc(s) { return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
  A.esc = esc;

  var palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39"];
  var byCluster = new Array(n), density = new Array(n), text = new Array(n);
  for (i = 0; i < n; i++) {
    var coarse = M.fc[i] >= 0 ? ancestorAt(M.fc[i], 0) : -1;
    byCluster[i] = coarse >= 0 ? palette[coarse % palette.length] : "#999";
    density[i] = M.logd[i] / 100;
    var fine = M.fc[i] >= 0 ? C[M.fc[i]][3] : "no cluster";
    text[i] = "#" + M.ids[i] + " " + esc(M.labels[M.ids[i]] || "unlabelled") + "<br>" + esc(fine);
  }
  var webgl = (function () {
    try { var cv = document.createElement("canvas"); return !!(cv.getContext("webgl") || cv.getContext("experimental-webgl")); }
    catch (e) { return false; }
  })();
  var kind = webgl ? "scattergl" : "scatter";
  var G = M.grid, pad = G * 0.03, full = [-pad, G + pad];
  var main = {
    type: kind, mode: "markers", x: M.x, y: M.y, text: text, hoverinfo: "text", name: "features",
    marker: { size: n > 20000 ? 3 : 5, color: byCluster, opacity: 0.8 }
  };
  var hits = { type: kind, mode: "markers", x: [], y: [], customdata: [], hoverinfo: "skip", name: "search",
    marker: { size: 10, color: "rgba(0,0,0,0)", line: { color: "#111", width: 2 } } };
  var chosen = { type: kind, mode: "markers", x: [], y: [], customdata: [], hoverinfo: "skip", name: "selected",
    marker: { size: 16, color: "rgba(217,48,37,0.15)", line: { color: "#d93025", width: 3 } } };
  var axis = { showgrid: false, zeroline: false, showticklabels: false, range: full.slice() };
  var layout = {
    margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: false, dragmode: "pan", hovermode: "closest",
    xaxis: axis, yaxis: Object.assign({}, axis, { scaleanchor: "x" }), annotations: [],
    plot_bgcolor: "#fff"
  };
  var annClusters = [];

  function labelLevel(width) {
    var ratio = (full[1] - full[0]) / Math.max(width, 1e-9);
    var lev = Math.floor(Math.log(ratio) / Math.log(2.5) + 0.2);
    return Math.max(0, Math.min(M.levels - 1, lev));
  }
  function annotationsFor(xr, yr) {
    var lev = labelLevel(xr[1] - xr[0]);
    var shown = [];
    for (var k = 0; k < C.length; k++) {
      var cl = C[k];
      if (cl[1] !== lev || cl[5] === null) continue;
      if (cl[5] < xr[0] || cl[5] > xr[1] || cl[6] < yr[0] || cl[6] > yr[1]) continue;
      shown.push(k);
    }
    shown.sort(function (a, b) { return C[b][4] - C[a][4] || a - b; });
    shown = shown.slice(0, 40);
    annClusters = shown.map(function (k) { return C[k][0]; });
    document.body.setAttribute("data-label-level", String(lev));
    return shown.map(function (k) {
      return { x: C[k][5], y: C[k][6], text: esc(C[k][3]), showarrow: false, captureevents: true,
        font: { size: lev === 0 ? 14 : 12, color: "#222" }, bgcolor: "rgba(255,255,255,0.8)",
        bordercolor: "#bbb", borderwidth: 1, borderpad: 2 };
    });
  }
  var busy = false;
  function refreshLabels() {
    if (busy) return;
    var xr = gd.layout.xaxis.range, yr = gd.layout.yaxis.range;
    busy = true;
    Plotly.relayout(gd, { annotations: annotationsFor(xr, yr) }).then(function () { busy = false; }, function () { busy = false; });
  }

  function showSelected(parts) {
    var box = document.getElementById("selected");
    if (!box) return;
    box.textContent = "";
    parts.forEach(function (p) {
      var el;
      if (p.href) { el = document.createElement("a"); el.href = p.href; } else { el = document.createElement("span"); }
      el.textContent = p.text;
      box.appendChild(el);
      box.appendChild(document.createTextNode(" "));
    });
    box.hidden = false;
  }
  function zoomTo(cx, cy, half) {
    return Plotly.relayout(gd, { "xaxis.range": [cx - half, cx + half], "yaxis.range": [cy - half, cy + half] });
  }
  function focusFeature(id) {
    var p = idToPoint.get(id);
    document.body.setAttribute("data-highlight", "feature:" + id);
    if (p === undefined) {
      showSelected([{ text: "Feature #" + id + " is not on the map (dead or not laid out)." }, { text: "open its page", href: A.featureHref(id) }]);
      return Promise.resolve();
    }
    Plotly.restyle(gd, { x: [[M.x[p]]], y: [[M.y[p]]], customdata: [[id]] }, [2]);
    var fine = M.fc[p] >= 0 ? C[M.fc[p]][3] : "no cluster";
    showSelected([{ text: "#" + id + " " + (M.labels[id] || "unlabelled"), href: A.featureHref(id) }, { text: "in " + fine }]);
    return zoomTo(M.x[p], M.y[p], G * 0.05);
  }
  function focusCluster(cid) {
    var k = clusterIndex.get(cid);
    document.body.setAttribute("data-highlight", "cluster:" + cid);
    if (k === undefined) return Promise.resolve();
    var lev = C[k][1], xs = [], ys = [], ids = [];
    for (var q = 0; q < n; q++) {
      if (M.fc[q] >= 0 && ancestorAt(M.fc[q], lev) === k) { xs.push(M.x[q]); ys.push(M.y[q]); ids.push(M.ids[q]); }
    }
    Plotly.restyle(gd, { x: [xs], y: [ys], customdata: [ids] }, [2]);
    showSelected([{ text: C[k][3] + " (" + ids.length + " features)", href: A.clusterHref(cid) }]);
    if (!xs.length) return Promise.resolve();
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    var half = Math.max(x1 - x0, y1 - y0) * 0.6 + G * 0.01;
    return zoomTo((x0 + x1) / 2, (y0 + y1) / 2, half);
  }
  A.showHits = function (ids) {
    var xs = [], ys = [], keep = [];
    ids.forEach(function (id) {
      var p = idToPoint.get(id);
      if (p !== undefined) { xs.push(M.x[p]); ys.push(M.y[p]); keep.push(id); }
    });
    return Plotly.restyle(gd, { x: [xs], y: [ys], customdata: [keep] }, [1]);
  };
  A.clusters = C;
  A.labels = M.labels;
  A.nFeatures = M.n;

  function applyHash() {
    var h = location.hash.replace(/^#/, "");
    var m = /^feature=(\d+)$/.exec(h);
    if (m) return focusFeature(Number(m[1]));
    m = /^cluster=(-?\d+)$/.exec(h);
    if (m) return focusCluster(Number(m[1]));
    return Promise.resolve();
  }

  var t0 = performance.now();
  Plotly.newPlot(gd, [main, hits, chosen], layout,
    { responsive: true, scrollZoom: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] }
  ).then(function () {
    gd.on("plotly_click", function (ev) {
      var pt = ev && ev.points && ev.points[0];
      if (!pt) return;
      var id = pt.curveNumber === 0 ? M.ids[pt.pointIndex] : pt.customdata;
      if (id !== undefined && id !== null) window.location.href = A.featureHref(id);
    });
    gd.on("plotly_clickannotation", function (ev) {
      var cid = annClusters[ev.index];
      if (cid !== undefined) window.location.href = A.clusterHref(cid);
    });
    gd.on("plotly_relayout", function (ev) {
      var moved = Object.keys(ev || {}).some(function (k) { return /^[xy]axis\.(range|autorange)/.test(k) || k === "xaxis" || k === "yaxis"; });
      if (moved) refreshLabels();
    });
    refreshLabels();
    return applyHash();
  }).then(function () {
    document.body.setAttribute("data-points", String(gd.data[0].x.length));
    document.body.setAttribute("data-map-ms", String(Math.round(performance.now() - t0)));
    document.body.setAttribute("data-map-ready", "1");
  });
  window.addEventListener("hashchange", applyHash);

  document.querySelectorAll('input[name="colour"]').forEach(function (r) {
    r.addEventListener("change", function () {
      if (!r.checked) return;
      if (r.value === "density") {
        Plotly.restyle(gd, { "marker.color": [density], "marker.colorscale": ["Viridis"], "marker.showscale": [true],
          "marker.colorbar": [{ title: { text: "log10 density" }, thickness: 12 }] }, [0]);
      } else {
        Plotly.restyle(gd, { "marker.color": [byCluster], "marker.showscale": [false] }, [0]);
      }
      document.body.setAttribute("data-colour", r.value);
    });
  });
})();
