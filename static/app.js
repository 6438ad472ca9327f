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
