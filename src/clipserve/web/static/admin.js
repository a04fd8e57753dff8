// The admin page: accounts, grants, keys (the /v1/admin API; the server checks the caller is an admin).
(function () {
  "use strict";
  const cs = window.clipserve;
  const errorBox = document.getElementById("admin-error");

  async function loadAccounts() {
    const accounts = (await cs.get("/v1/admin/accounts")).data;
    const body = document.querySelector("#accounts-table tbody");
    cs.clear(body);
    accounts.forEach(function (account) {
      const tr = document.createElement("tr");
      tr.setAttribute("data-account-id", String(account.id));
      tr.appendChild(cs.el("td", "acct-id", account.id));
      tr.appendChild(cs.el("td", "acct-name", account.name));
      tr.appendChild(cs.el("td", "acct-balance num", cs.dollars(account.balance_micros)));
      tr.appendChild(cs.el("td", "acct-granted num", cs.dollars(account.granted_micros)));
      tr.appendChild(cs.el("td", "acct-charged num", cs.dollars(account.charged_micros)));
      body.appendChild(tr);
    });
  }

  async function loadKeys() {
    const keys = (await cs.get("/v1/admin/keys")).data;
    const body = document.querySelector("#admin-keys-table tbody");
    cs.clear(body);
    keys.forEach(function (key) {
      const tr = document.createElement("tr");
      tr.setAttribute("data-key-id", String(key.id));
      tr.appendChild(cs.el("td", "key-account", key.account_id));
      // a console key meters a web login's session; it has no secret anyone could present
      tr.appendChild(cs.el("td", "key-name", key.is_console ? key.name + " (web sign-in)" : key.name));
      const label = cs.el("td", "key-label");
      label.appendChild(cs.el("code", "", key.is_console ? "no secret" : key.label));
      tr.appendChild(label);
      const status = cs.el("td", "key-status");
      status.appendChild(cs.el("span", "pill pill-" + key.status, key.status));
      tr.appendChild(status);
      tr.appendChild(cs.el("td", "key-admin", key.is_admin ? "yes" : "no"));
      body.appendChild(tr);
    });
  }

  async function load() {
    cs.showError(errorBox, null);
    const results = await Promise.allSettled([loadAccounts(), loadKeys()]);
    const failed = results.find(function (r) { return r.status === "rejected"; });
    if (failed) cs.showError(errorBox, failed.reason);
  }

  document.getElementById("grant-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    const account = document.getElementById("grant-account").value.trim();
    const amount = document.getElementById("grant-amount").value.trim();
    const note = document.getElementById("grant-note").value.trim();
    const result = document.getElementById("grant-result");
    const submit = document.getElementById("grant-submit");
    submit.disabled = true;
    cs.showError(errorBox, null);
    result.textContent = "";
    try {
      const body = { credit: amount };
      if (note) body.note = note;
      const updated = await cs.post("/v1/admin/accounts/" + encodeURIComponent(account) + "/grants", body);
      result.textContent = "Granted. " + updated.name + " now has " + cs.dollars(updated.balance_micros) + ".";
      await load();
    } catch (error) {
      cs.showError(errorBox, error);
    } finally {
      submit.disabled = false;
    }
  });

  load();
})();
