// authz-server console: the only script. Pages work without it; it only stops a form
// from being sent twice by an impatient double click (buttons are not disabled, so the
// clicked button's name and value still reach the server).
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.dataset.sent === "1") {
    event.preventDefault();
    return;
  }
  form.dataset.sent = "1";
  form.setAttribute("aria-busy", "true");
});
