// Feature pages: the example rows (drawn from the page's example script), the short/long context toggle
// and the token hover card. Corpus text only ever becomes text nodes: nothing is parsed as HTML.
(function () {
  "use strict";

  function el(tag, cls) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    return e;
  }

  var tok = window.ATLAS_TOKENS || {};

  function tokenText(id) {
    var text = tok[id];
    return text !== undefined ? text : id < 0 ? "\u2205" : "\ufffd";
  }

  // One row: [value shown, token ids, focus index, flat (position, level, activation) of fired tokens].
  // A span per token, in order; tokens beyond the short window sit in a hidden .far span on each side.
  function exampleRow(data, r) {
    var ids = r[1], focus = r[2], marks = r[3], w = data.w;
    var level = {}, value = {};
    for (var m = 0; m + 2 < marks.length; m += 3) {
      level[marks[m]] = marks[m + 1];
      value[marks[m]] = marks[m + 2];
    }
    var row = el("div", "ex");
    var v = el("span", "exv");
    v.textContent = r[0];
    row.appendChild(v);
    var line = el("span", "tok");
    line.setAttribute("data-t", ids.join(" "));
    var lo = focus - w, hi = focus + w, before = null, after = null;
    for (var i = 0; i < ids.length; i++) {
      var s = document.createElement("span");
      s.textContent = tokenText(ids[i]);
      var cls = level[i] ? "a" + level[i] : "";
      if (i === focus) cls = cls ? cls + " f" : "f";
      if (cls) s.className = cls;
      if (level[i]) s.setAttribute("data-v", String(value[i]));
      if (i < lo) {
        if (!before) before = line.appendChild(el("span", "far"));
        before.appendChild(s);
      } else if (i > hi) {
        if (!after) after = line.appendChild(el("span", "far"));
        after.appendChild(s);
      } else {
        line.appendChild(s);
      }
    }
    row.appendChild(line);
    return row;
  }

  var groups = document.querySelectorAll(".exs[data-runs]");
  var data = window.ATLAS_EXAMPLES;
  for (var g = 0; g < groups.length; g++) {
    var holder = groups[g];
    if (!data || !data.runs || !window.ATLAS_TOKENS) {
      holder.className += " missing";
      holder.textContent = "The examples did not load: this page's examples.js or the site's data/tokens.js is missing or could not be read.";
      continue;
    }
    var frag = document.createDocumentFragment();
    var runs = holder.getAttribute("data-runs").split(" ");
    for (var k = 0; k < runs.length; k++) {
      var rows = data.runs[Number(runs[k])] || [];
      for (var j = 0; j < rows.length; j++) frag.appendChild(exampleRow(data, rows[j]));
    }
    holder.appendChild(frag);
  }

  // Steering: one strength shown at a time. Without this script every strength is listed one after another.
  var ctl = document.querySelector(".steer-ctl");
  if (ctl) {
    var buttons = ctl.querySelectorAll("button[data-s]");
    var panels = document.querySelectorAll(".steer-s[data-s]");
    var show = function (s) {
      for (var b = 0; b < buttons.length; b++) {
        buttons[b].setAttribute("aria-pressed", buttons[b].getAttribute("data-s") === s ? "true" : "false");
      }
      for (var q = 0; q < panels.length; q++) panels[q].hidden = panels[q].getAttribute("data-s") !== s;
    };
    ctl.addEventListener("click", function (e) {
      var b = e.target && e.target.closest ? e.target.closest("button[data-s]") : null;
      if (b) show(b.getAttribute("data-s"));
    });
    show(ctl.getAttribute("data-default") || "0");
    ctl.hidden = false;
  }

  var btn = document.getElementById("ctx-toggle");
  if (btn) {
    btn.addEventListener("click", function () {
      var on = document.body.classList.toggle("long-ctx");
      btn.setAttribute("aria-pressed", on ? "true" : "false");
      btn.textContent = on ? "Show short context" : "Show long context";
    });
  }
  var card = document.getElementById("card");
  if (!card) return;
  function cardLine(parent, name, value) {
    var line = document.createElement("div");
    line.appendChild(document.createTextNode(name + " "));
    var b = document.createElement("b");
    b.textContent = value;
    line.appendChild(b);
    parent.appendChild(line);
  }
  document.addEventListener("mouseover", function (e) {
    var t = e.target;
    var span = t && t.closest ? t.closest(".tok span:not(.far)") : null;
    if (!span) { card.hidden = true; return; }
    // A row lists its token ids once (data-t), in the order of its token spans.
    var tok = span.closest(".tok");
    var index = Array.prototype.indexOf.call(tok.querySelectorAll("span:not(.far)"), span);
    card.textContent = "";
    cardLine(card, "token", JSON.stringify(span.textContent));
    cardLine(card, "id", (tok.getAttribute("data-t") || "").split(" ")[index] || "?");
    cardLine(card, "activation", span.getAttribute("data-v") || "0");
    var r = span.getBoundingClientRect();
    card.style.left = Math.round(r.left + window.scrollX) + "px";
    card.style.top = Math.round(r.bottom + window.scrollY + 4) + "px";
    card.hidden = false;
  });
})();
