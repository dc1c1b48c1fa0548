// Progressive enhancement: a "Copy code" button next to the voucher. Without JavaScript the button stays
// hidden and the code can be selected by hand (it selects whole on click, via CSS user-select: all).
(function () {
  "use strict";

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copy(text, element) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    selectText(element);
    return document.execCommand("copy") ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  document.querySelectorAll("[data-copy-target]").forEach(function (button) {
    var target = document.getElementById(button.getAttribute("data-copy-target"));
    if (!target) {
      return;
    }
    var status = button.parentElement.querySelector(".copy-status");
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = target.textContent.trim();
      copy(text, target).then(
        function () {
          if (status) status.textContent = "Copied!";
        },
        function () {
          selectText(target);
          if (status) status.textContent = "Press Ctrl+C (or ⌘C) to copy.";
        }
      );
    });
  });
})();
