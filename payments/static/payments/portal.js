// Merchant portal: refresh the status of payments that are still moving, without a reload.
// Elements with data-poll-payment="pay_..." inside a container with data-status-url are
// polled; one with data-reload-on-change reloads the page when the payment (or one of its
// refunds) changes, so its timeline, attempts and refunds show too.
(function () {
  "use strict";
  var container = document.querySelector("[data-status-url]");
  if (!container || !window.fetch) { return; }
  var url = container.getAttribute("data-status-url");
  var delay = 1000;
  var maxDelay = 8000;

  function watched() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-poll-payment]"));
  }

  function apply(element, payment) {
    if (!payment) {
      element.removeAttribute("data-poll-payment");
      return;
    }
    if (element.hasAttribute("data-reload-on-change")) {
      if (payment.token !== element.getAttribute("data-token")) {
        window.location.reload();
      } else if (!payment.moving) {
        element.removeAttribute("data-poll-payment");
      }
      return;
    }
    element.textContent = payment.label;
    element.className = "status status-" + payment.status;
    if (!payment.moving) { element.removeAttribute("data-poll-payment"); }
  }

  function poll() {
    var elements = watched();
    if (!elements.length) { return; }
    var query = elements.map(function (element) {
      return "id=" + encodeURIComponent(element.getAttribute("data-poll-payment"));
    }).join("&");
    fetch(url + "?" + query, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (answer) {
        elements.forEach(function (element) {
          apply(element, answer.payments[element.getAttribute("data-poll-payment")]);
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
