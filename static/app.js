// Spacemail's only script besides htmx: no inline code anywhere (strict CSP).
document.addEventListener("htmx:sendError", function () {
  var flash = document.getElementById("flash");
  if (flash) {
    flash.innerHTML = "";
    var p = document.createElement("p");
    p.className = "flash flash-error";
    p.setAttribute("role", "alert");
    p.textContent = "The server could not be reached. Check your connection and try again.";
    flash.appendChild(p);
  }
});

// New space: the key is suggested from the name as it is typed (the server makes the same one when it is left
// empty), until the person types a key of their own.
function suggestedKey(name) {
  var words = name.normalize("NFKD").replace(/[^\x00-\x7f]/g, "").match(/[A-Za-z0-9]+/g) || [];
  var base = words.length >= 3 ? words.map(function (w) { return w[0]; }).join("") : words.join("").slice(0, 10);
  base = base.toUpperCase().replace(/^[0-9]+/, "");
  return base.length >= 2 ? base : (base ? base + "X" : "");
}

document.addEventListener("DOMContentLoaded", function () {
  var box = document.querySelector("[data-suggest-key]");
  if (!box) return;
  var name = box.querySelector("#name"), key = box.querySelector("#key");
  if (!name || !key) return;
  var suggested = !key.value;
  key.addEventListener("input", function () { suggested = key.value === ""; });
  name.addEventListener("input", function () { if (suggested) key.value = suggestedKey(name.value); });
});

// An HTML mail's frame grows to its content (no script runs inside it: the sandbox has no allow-scripts and its
// CSP allows none; the frame is same-origin only so that this page can measure it), and follows late images.
function fitMailFrame(frame) {
  var doc;
  try { doc = frame.contentDocument; } catch (e) { return; }
  if (!doc || !doc.documentElement) return;
  // The body's own height (the root element is never shorter than the frame, so it could only grow).
  var fit = function () { if (doc.body) frame.style.height = (Math.ceil(doc.body.getBoundingClientRect().height) + 2) + "px"; };
  fit();
  if (window.ResizeObserver && doc.body) new ResizeObserver(fit).observe(doc.body);
}

document.addEventListener("load", function (event) {
  var frame = event.target;
  if (frame.matches && frame.matches("iframe.mail-body")) fitMailFrame(frame);
}, true);

// The Mail tab's keys: j/k move through the list (or a thread's messages), o or Enter opens, u goes back to the
// list, / searches, ? shows them. Never while typing in a field, never with Ctrl, Alt or Meta.
(function () {
  var current = -1;

  function items() {
    var list = document.querySelector("[data-keyboard-list]");
    if (list) return Array.prototype.slice.call(list.querySelectorAll("tbody tr"));
    return Array.prototype.slice.call(document.querySelectorAll(".thread-tree > li"));
  }

  function select(index) {
    var rows = items();
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach(function (row, i) { row.classList.toggle("kb-current", i === current); });
    var link = rows[current].querySelector("a[href]");
    if (link) link.focus();
    rows[current].scrollIntoView({block: "nearest"});
  }

  document.addEventListener("htmx:afterSwap", function () { current = -1; });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.altKey || event.metaKey || event.defaultPrevented) return;
    var target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable], dialog[open]")) return;
    var help = document.getElementById("keyboard-help");
    if (!help) return;  // only on the Mail tab's pages
    var key = event.key;
    if (key === "j" || key === "k") {
      var rows = items();
      if (current < 0) {  // start from the row that has focus, if any
        current = rows.findIndex(function (row) { return row.contains(document.activeElement); });
        if (current < 0) current = key === "j" ? -1 : rows.length;
      }
      select(current + (key === "j" ? 1 : -1));
    } else if (key === "o") {
      var row = items()[current];
      var link = row && row.querySelector("a[href]");
      if (link) link.click();
    } else if (key === "u") {
      var up = document.querySelector("a[rel=up]");
      if (up) up.click();
    } else if (key === "/") {
      var box = document.getElementById("mail-q");
      if (box) { box.focus(); box.select(); }
    } else if (key === "?") {
      help.showModal();
    } else {
      return;
    }
    event.preventDefault();
  });
})();
