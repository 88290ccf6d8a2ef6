// Feature pages: the short/long context toggle and the token hover card. No data is ever parsed as HTML.
(function () {
  "use strict";
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
  function row(parent, name, value) {
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
    row(card, "token", JSON.stringify(span.textContent));
    row(card, "id", (tok.getAttribute("data-t") || "").split(" ")[index] || "?");
    row(card, "activation", span.getAttribute("data-v") || "0");
    var r = span.getBoundingClientRect();
    card.style.left = Math.round(r.left + window.scrollX) + "px";
    card.style.top = Math.round(r.bottom + window.scrollY + 4) + "px";
    card.hidden = false;
  });
})();
