// Offline search: prebuilt lower-case text shards (label \t top tokens \t explanations, one line per
// feature), loaded by <script> on first use and scanned with indexOf. Results are built as DOM text.
(function () {
  "use strict";
  var A = window.ATLAS = window.ATLAS || {};
  var conf = A.conf || JSON.parse(document.getElementById("atlas-config").textContent);
  var shards = [], loaded = 0, waiting = [], started = false;
  var LIMIT_SHOWN = 100, LIMIT_HITS = 5000;

  window.ATLAS_SEARCH_SHARD = function (k, start, text) {
    var starts = [0];
    for (var p = text.indexOf("\n"); p !== -1; p = text.indexOf("\n", p + 1)) starts.push(p + 1);
    shards[k] = { start: start, text: text, starts: Int32Array.from(starts) };
    loaded++;
    if (loaded === conf.searchShards.length) { var w = waiting; waiting = []; w.forEach(function (f) { f(); }); }
  };
  function ensureLoaded(done) {
    if (loaded === conf.searchShards.length) { done(); return; }
    waiting.push(done);
    if (started) return;
    started = true;
    conf.searchShards.forEach(function (src) {
      var s = document.createElement("script");
      s.src = src;
      document.head.appendChild(s);
    });
  }
  function lineOf(starts, pos) {
    var lo = 0, hi = starts.length - 1;
    while (lo < hi) { var mid = (lo + hi + 1) >> 1; if (starts[mid] <= pos) lo = mid; else hi = mid - 1; }
    return lo;
  }
  // Ranks label matches first, then top-token matches, then other explanations; ties by feature id.
  function query(q) {
    var t0 = performance.now();
    q = String(q || "").trim().toLowerCase();
    var res = { features: [], fields: [], clusters: [], ms: 0, total: 0 };
    if (!q) return res;
    var byField = [[], [], []], total = 0, seen = new Set();
    var m = /^#?(\d+)$/.exec(q);
    if (m && Number(m[1]) < (A.nFeatures || Infinity)) { res.features.push(Number(m[1])); res.fields.push(-1); seen.add(Number(m[1])); }
    for (var k = 0; k < shards.length && total < LIMIT_HITS; k++) {
      var s = shards[k], text = s.text, starts = s.starts;
      var pos = text.indexOf(q);
      while (pos !== -1 && total < LIMIT_HITS) {
        var line = lineOf(starts, pos), ls = starts[line];
        var t1 = text.indexOf("\t", ls), t2 = text.indexOf("\t", t1 + 1);
        var field = pos < t1 ? 0 : pos < t2 ? 1 : 2;
        var id = s.start + line;
        if (!seen.has(id)) { byField[field].push(id); seen.add(id); total++; }
        var next = line + 1 < starts.length ? starts[line + 1] : text.length;
        pos = text.indexOf(q, next);
      }
    }
    for (var f = 0; f < 3; f++) byField[f].forEach(function (id) { res.features.push(id); res.fields.push(f); });
    (A.clusters || []).forEach(function (cl) {
      if (String(cl[3]).toLowerCase().indexOf(q) !== -1) res.clusters.push(cl);
    });
    res.clusters.sort(function (a, b) { return a[1] - b[1] || b[4] - a[4]; });
    res.total = res.features.length;
    res.ms = performance.now() - t0;
    return res;
  }
  A.searchQuery = query;
  A.searchReady = function (done) { ensureLoaded(done); };

  var input = document.getElementById("q"), list = document.getElementById("results"), status = document.getElementById("search-status");
  if (!input || !list) return;
  var FIELD = ["label", "top token", "explanation"];
  function item(text, href, note) {
    var li = document.createElement("li"), a = document.createElement("a");
    a.href = href; a.textContent = text; li.appendChild(a);
    if (note) { var sp = document.createElement("span"); sp.className = "kind"; sp.textContent = " " + note; li.appendChild(sp); }
    list.appendChild(li);
  }
  function show() {
    var r = query(input.value);
    list.textContent = "";
    r.clusters.slice(0, 10).forEach(function (cl) { item(cl[3], A.clusterHref(cl[0]), "cluster, level " + cl[1] + ", " + cl[4] + " features"); });
    r.features.slice(0, LIMIT_SHOWN).forEach(function (id, j) {
      var f = r.fields[j];
      item("#" + id + " " + ((A.labels && A.labels[id]) || "unlabelled"), A.featureHref(id), f >= 0 ? "matched " + FIELD[f] : "feature id");
    });
    status.textContent = input.value.trim() ? (r.total + " features, " + r.clusters.length + " clusters (" + r.ms.toFixed(1) + " ms)") : "";
    document.body.setAttribute("data-search-ms", r.ms.toFixed(2));
    document.body.setAttribute("data-search-count", String(r.total));
    if (A.showHits) A.showHits(r.features.slice(0, LIMIT_HITS));
  }
  var timer = null;
  input.addEventListener("focus", function () { ensureLoaded(function () {}); });
  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { ensureLoaded(show); }, 60);
  });
  var fromUrl = new URLSearchParams(location.search).get("q");
  if (fromUrl) { input.value = fromUrl; ensureLoaded(show); }
})();
