// Admin live status: elements marked data-live="<kind>:<id>" (see backoffice/live.py) are
// refreshed from their data-live-url while their object may still change. One marked
// data-live-reload reloads the page when its object changes, so the whole page is current.
(function () {
  "use strict";
  if (!window.fetch || !window.URLSearchParams) { return; }
  var delay = 1000;
  var maxDelay = 8000;

  function watched() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live]"));
  }

  function apply(element, live) {
    if (!live) {
      element.removeAttribute("data-live");
      return;
    }
    if (element.hasAttribute("data-live-reload")) {
      if (live.token !== element.getAttribute("data-live-token")) {
        window.location.reload();
        return;
      }
    } else {
      element.textContent = live.label;
      element.className = "live-status status-" + live.status;
    }
    if (!live.moving) { element.removeAttribute("data-live"); }
  }

  function poll() {
    var elements = watched();
    if (!elements.length) { return; }
    var query = new URLSearchParams();
    elements.forEach(function (element) { query.append("o", element.getAttribute("data-live")); });
    var url = elements[0].getAttribute("data-live-url");
    fetch(url + "?" + query.toString(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (answer) {
        elements.forEach(function (element) {
          apply(element, answer.objects[element.getAttribute("data-live")]);
        });
        delay = Math.min(delay * 1.25, maxDelay);
        window.setTimeout(poll, delay);
      })
      .catch(function () {
        delay = maxDelay;
        window.setTimeout(poll, delay);
      });
  }

  window.setTimeout(poll, delay);
})();
