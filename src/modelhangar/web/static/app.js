// modelhangar web UI: a little progressive help; every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Select every model of the page at once (the box is hidden without script).
  var all = document.getElementById("select-all");
  if (all) {
    all.hidden = false;
    var boxes = document.querySelectorAll('#bulk input[name="model"]');
    all.addEventListener("change", function () {
      boxes.forEach(function (b) { b.checked = all.checked; });
    });
  }
  // The delete button waits for the typed confirmation (the server checks it anyway).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    var input = form.querySelector('input[name="confirm"]');
    var button = form.querySelector('button[type="submit"]');
    if (!input || !button) { return; }
    var want = form.getAttribute("data-confirm");
    var sync = function () { button.disabled = input.value.trim() !== want; };
    input.addEventListener("input", sync);
    sync();
  });
});
