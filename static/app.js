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
