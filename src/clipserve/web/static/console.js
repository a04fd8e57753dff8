// The console: balance, 30-day usage chart, API keys, classifiers, recent requests. Everything from the JSON API.
(function () {
  "use strict";
  const cs = window.clipserve, charts = window.clipserveCharts;
  const errorBox = document.getElementById("console-error");
  let usage = null;
  let metric = "images";

  function count(v, axis) {
    return axis && !Number.isInteger(v) ? v.toFixed(1) : String(Math.round(v));
  }

  const formats = {
    images: count,
    tokens: count,
    dollars: function (v, axis) { return "$" + (axis ? v.toFixed(v < 0.01 && v > 0 ? 4 : 2) : v.toFixed(6)); },
  };

  function dayRange(start, end) {
    const days = [];
    const cursor = new Date(start + "T00:00:00Z");
    const last = new Date(end + "T00:00:00Z");
    while (cursor <= last) {
      days.push(cursor.toISOString().slice(0, 10));
      cursor.setUTCDate(cursor.getUTCDate() + 1);
    }
    return days;
  }

  // /v1/usage rows are per day per endpoint: sum them per day.
  function perDay(response) {
    const days = dayRange(response.start_date, response.end_date);
    const totals = {};
    days.forEach(function (day) { totals[day] = { requests: 0, images: 0, tokens: 0, micros: 0 }; });
    response.data.forEach(function (row) {
      const t = totals[row.date];
      if (!t) return;
      t.requests += row.requests; t.images += row.images; t.tokens += row.tokens; t.micros += row.cost_micros;
    });
    return { days: days, totals: totals, totalMicros: response.total_cost_micros };
  }

  function valuesOf(name) {
    return usage.days.map(function (day) {
      const t = usage.totals[day];
      return name === "dollars" ? t.micros / 1e6 : t[name];
    });
  }

  function drawChart() {
    if (!usage) return;
    charts.drawBarChart(
      document.getElementById("usage-chart"), usage.days, valuesOf(metric), formats[metric],
      "Usage per day (" + metric + "), last 30 days"
    );
  }

  function fillUsageTable() {
    const body = document.querySelector("#usage-table tbody");
    cs.clear(body);
    usage.days.slice().reverse().forEach(function (day) {
      const t = usage.totals[day];
      const tr = document.createElement("tr");
      tr.setAttribute("data-day", day);
      [day, t.requests, t.images, t.tokens, cs.dollars(t.micros)].forEach(function (value, i) {
        tr.appendChild(cs.el(i === 0 ? "th" : "td", i === 0 ? "" : "num", value));
      });
      body.appendChild(tr);
    });
    document.getElementById("spent-30d").textContent = cs.dollars(usage.totalMicros);
  }

  async function loadUsage() {
    usage = perDay(await cs.get("/v1/usage"));
    drawChart();
    fillUsageTable();
  }

  async function loadAccount() {
    const account = await cs.get("/v1/account");
    document.getElementById("balance").textContent = cs.dollars(account.account.balance_micros);
    document.getElementById("account-name").textContent = account.account.name;
    const limits = document.getElementById("rate-limits");
    limits.textContent = cs.rateLimitText(account.rate_limit);
  }

  async function loadKeys() {
    const keys = (await cs.get("/v1/account/keys")).data;
    const body = document.querySelector("#keys-table tbody");
    cs.clear(body);
    keys.forEach(function (key) {
      const tr = document.createElement("tr");
      tr.setAttribute("data-key-id", String(key.id));
      tr.appendChild(cs.el("td", "key-name", key.name));
      const label = cs.el("td", "key-label");
      label.appendChild(cs.el("code", "", key.label));
      tr.appendChild(label);
      const status = cs.el("td", "key-status");
      status.appendChild(cs.el("span", "pill pill-" + key.status, key.status));
      tr.appendChild(status);
      tr.appendChild(cs.el("td", "key-limits", cs.rateLimitText(key.rate_limit)));
      const actions = cs.el("td", "key-actions");
      if (key.status === "active") {
        const revoke = cs.el("button", "button button-small button-danger key-revoke", "Revoke");
        revoke.type = "button";
        revoke.setAttribute("aria-label", "Revoke key " + key.name);
        revoke.addEventListener("click", function () { revokeKey(key.id, revoke); });
        actions.appendChild(revoke);
      }
      tr.appendChild(actions);
      body.appendChild(tr);
    });
    document.getElementById("keys-empty").hidden = keys.length > 0;
  }

  async function loadRequests() {
    const rows = (await cs.get("/v1/account/requests?limit=50")).data;
    const body = document.querySelector("#requests-table tbody");
    cs.clear(body);
    rows.forEach(function (row) {
      const tr = document.createElement("tr");
      tr.setAttribute("data-request-id", row.request_id || String(row.id));
      const time = cs.el("td", "req-time");
      const stamp = new Date(row.created_at * 1000);
      const when = cs.el("time", "", stamp.toLocaleString());
      when.setAttribute("datetime", stamp.toISOString());
      time.appendChild(when);
      tr.appendChild(time);
      tr.appendChild(cs.el("td", "req-endpoint", row.endpoint));
      tr.appendChild(cs.el("td", "req-images num", row.images));
      tr.appendChild(cs.el("td", "req-tokens num", row.tokens));
      tr.appendChild(cs.el("td", "req-cost num", cs.dollars(row.cost_micros)));
      const id = cs.el("td", "req-id");
      id.appendChild(cs.el("code", "", row.request_id || ""));
      tr.appendChild(id);
      body.appendChild(tr);
    });
    document.getElementById("requests-empty").hidden = rows.length > 0;
  }

  function percent(value) {
    return (value * 100).toFixed(1) + "%";
  }

  // The accuracy a classifier reports: cross-validated when it had enough examples, else on its training set.
  function accuracyText(classifier) {
    if (typeof classifier.cv_accuracy === "number") return percent(classifier.cv_accuracy) + " (cross-validated)";
    if (typeof classifier.train_accuracy === "number") return percent(classifier.train_accuracy) + " (training)";
    return "–";
  }

  async function loadClassifiers() {
    const classifiers = (await cs.get("/v1/classifiers")).data;
    const body = document.querySelector("#classifiers-table tbody");
    cs.clear(body);
    classifiers.forEach(function (classifier) {
      const tr = document.createElement("tr");
      tr.setAttribute("data-classifier-id", classifier.id);
      tr.appendChild(cs.el("td", "clf-name", classifier.name));
      tr.appendChild(cs.el("td", "clf-labels", classifier.labels.join(", ")));
      tr.appendChild(cs.el("td", "clf-examples num", classifier.examples));
      const accuracy = cs.el("td", "clf-accuracy num", accuracyText(classifier));
      accuracy.setAttribute("data-accuracy-kind", typeof classifier.cv_accuracy === "number" ? "cv" : "train");
      tr.appendChild(accuracy);
      const id = cs.el("td", "clf-id");
      id.appendChild(cs.el("code", "", classifier.id));
      tr.appendChild(id);
      body.appendChild(tr);
    });
    document.getElementById("classifiers-empty").hidden = classifiers.length > 0;
  }

  async function run(loaders) {
    cs.showError(errorBox, null);
    const results = await Promise.allSettled(loaders.map(function (load) { return load(); }));
    const failed = results.find(function (r) { return r.status === "rejected"; });
    if (failed) cs.showError(errorBox, failed.reason);
  }

  async function revokeKey(id, button) {
    button.disabled = true;
    try {
      await cs.del("/v1/account/keys/" + encodeURIComponent(id));
    } catch (error) {
      cs.showError(errorBox, error);
    }
    await run([loadKeys]);
  }

  document.getElementById("key-create-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    const nameInput = document.getElementById("key-name");
    const submit = document.getElementById("key-create-submit");
    submit.disabled = true;
    cs.showError(errorBox, null);
    try {
      const created = await cs.post("/v1/account/keys", { name: nameInput.value.trim() });
      document.getElementById("new-key-value").textContent = created.key;
      document.getElementById("new-key").hidden = false;
      nameInput.value = "";
      await run([loadKeys]);
    } catch (error) {
      cs.showError(errorBox, error);
    } finally {
      submit.disabled = false;
    }
  });

  document.getElementById("new-key-copy").addEventListener("click", function (event) {
    cs.copyText(document.getElementById("new-key-value").textContent, event.currentTarget);
  });

  document.querySelectorAll("button[data-metric]").forEach(function (button) {
    button.addEventListener("click", function () {
      metric = button.getAttribute("data-metric");
      document.querySelectorAll("button[data-metric]").forEach(function (other) {
        other.setAttribute("aria-pressed", other === button ? "true" : "false");
      });
      drawChart();
    });
  });

  document.getElementById("refresh").addEventListener("click", function () {
    run([loadUsage, loadRequests, loadAccount, loadClassifiers]);
  });

  let resizing = null;
  window.addEventListener("resize", function () { // the chart is drawn at its container's width
    clearTimeout(resizing);
    resizing = setTimeout(drawChart, 150);
  });

  run([loadAccount, loadUsage, loadKeys, loadRequests, loadClassifiers]);
})();
