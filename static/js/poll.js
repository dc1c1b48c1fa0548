// While a payment is processing, check the page again in the background and reload only when the answer
// changed. Unlike <meta http-equiv="refresh"> (kept in <noscript> for browsers without JavaScript), nothing
// reloads under a reader's feet while there is nothing new to show.
(function () {
  "use strict";

  var marker = document.querySelector("[data-poll-seconds]");
  if (!marker || !window.fetch) {
    return;
  }
  var delay = Math.max(2, parseInt(marker.getAttribute("data-poll-seconds"), 10) || 5) * 1000;
  // Back off like the page's own refresh does (5 s doubling to a minute), and give up after 15 checks.
  var checksLeft = 15;

  function later() {
    checksLeft -= 1;
    if (checksLeft > 0) {
      window.setTimeout(check, delay);
      delay = Math.min(delay * 2, 60000);
    }
  }

  function check() {
    fetch(window.location.href, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        return response.text();
      })
      .then(function (html) {
        if (html.indexOf("data-poll-seconds") === -1) {
          window.location.reload();
        } else {
          later();
        }
      })
      .catch(later);
  }

  later();
})();
