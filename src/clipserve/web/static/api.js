// Shared by every page: calls to the JSON /v1 API (same origin, CSRF header when signed in), error display,
// small DOM helpers. User strings only ever reach the page through textContent.
(function () {
  "use strict";

  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = meta ? meta.getAttribute("content") : null;

  class ApiError extends Error {
    constructor(message, status, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (csrfToken) headers["X-CSRF-Token"] = csrfToken; // a signed-in page: the session cookie needs it
    const init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError("Could not reach the server: " + error.message, 0, null);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (error) {
        data = null;
      }
    }
    if (!response.ok) {
      let message = data && data.error && data.error.message ? data.error.message : "HTTP " + response.status;
      if (response.status === 401 && csrfToken) message += " (your session may have ended: sign in again)";
      throw new ApiError(message, response.status, data);
    }
    return data;
  }

  function showError(element, error) {
    if (!element) return;
    element.textContent = error ? error.message || String(error) : "";
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function copyText(text, button) {
    const done = function () {
      if (!button) return;
      const before = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = before; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
      return;
    }
    const area = el("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); done(); } catch (error) { /* the text stays selectable */ }
    document.body.removeChild(area);
  }

  // A File as a data URI, bytes as they are (no re-encoding: scores must match the API on the same file).
  function readAsDataURL(file) {
    return new Promise(function (resolve, reject) {
      const reader = new FileReader();
      reader.onload = function () {
        let uri = String(reader.result);
        // a file the browser could not type still goes as an image: the server reads the format from the bytes
        if (!/^data:image\//i.test(uri)) uri = uri.replace(/^data:[^;,]*/, "data:image/octet-stream");
        resolve(uri);
      };
      reader.onerror = function () { reject(new Error("could not read " + file.name)); };
      reader.readAsDataURL(file);
    });
  }

  function dollars(micros) {
    return "$" + (micros / 1e6).toFixed(6);
  }

  function limitText(value) {
    return value === null || value === undefined || value === "" ? "unlimited" : String(value);
  }

  function rateLimitText(limit) {
    if (!limit) return "";
    return limitText(limit.requests_per_minute) + " requests/min · " + limitText(limit.images_per_minute) + " images/min";
  }

  document.addEventListener("click", function (event) {
    const target = event.target.closest ? event.target.closest("[data-copy]") : null;
    if (!target) return;
    const source = document.getElementById(target.getAttribute("data-copy"));
    if (source) copyText(source.textContent, target);
  });

  window.clipserve = {
    get: function (path) { return call("GET", path); },
    post: function (path, body) { return call("POST", path, body); },
    del: function (path) { return call("DELETE", path); },
    ApiError: ApiError,
    showError: showError,
    el: el,
    clear: clear,
    copyText: copyText,
    readAsDataURL: readAsDataURL,
    dollars: dollars,
    rateLimitText: rateLimitText,
  };
})();
