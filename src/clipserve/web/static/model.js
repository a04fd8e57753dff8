// The model page: live status (ready / starting) without a reload.
(function () {
  "use strict";
  const status = document.getElementById("status");
  if (!status || status.textContent.trim() === "ready") return;
  const poll = function () {
    fetch("/ready", { headers: { Accept: "application/json" } }).then(function (response) {
      if (response.ok) {
        status.textContent = "ready";
        status.className = "status status-ready";
      } else {
        setTimeout(poll, 2000);
      }
    }, function () { setTimeout(poll, 5000); });
  };
  setTimeout(poll, 1000);
})();
