"""The console in a browser: sign up, free credit, a key made in the page, used by the openai client, revoked.

And the admin page: an operator gives an account an admin login with the CLI, then grants credit in the page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta

import openai
import pytest

from tests.browser.conftest import (
    MODEL,
    SIGNUP_CREDIT,
    Login,
    Site,
    WebPage,
    micros_of_dollars,
    new_email,
    sign_in,
    sign_up,
)


def usage_days(start: str, end: str) -> list[str]:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def test_sign_up_key_embeddings_console_revoke(web: WebPage, site: Site) -> None:
    sign_up(web, new_email("flow"), name="Flow Tester")
    page = web.page
    # the free credit, to the micro-dollar
    assert micros_of_dollars(page.text_content("#balance") or "") == int(SIGNUP_CREDIT * 1_000_000)
    web.shot("console-new-account")

    page.fill("#key-name", "ci key")
    with page.expect_response(lambda r: r.url.endswith("/v1/account/keys") and r.request.method == "POST"):
        page.click("#key-create-submit")
    page.wait_for_function(
        "() => (document.querySelector('#new-key-value')?.textContent || '').startsWith('sk-')"
    )
    key = (page.text_content("#new-key-value") or "").strip()
    assert re.fullmatch(r"sk-[A-Za-z0-9_\-]+", key), key
    row = page.locator("#keys-table tr[data-key-id]", has=page.locator(".key-name", has_text="ci key"))
    row.wait_for()  # the table is reloaded after the key is shown
    assert row.count() == 1, page.inner_html("#keys-table")
    key_id = row.get_attribute("data-key-id")
    web.shot("console-key-created")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.base_url)
    page.click("#new-key-copy")
    assert page.evaluate("navigator.clipboard.readText()") == key

    client = openai.OpenAI(api_key=key, base_url=site.base_url + "/v1", max_retries=0)
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=["a photo of a cat", "a rocket"])
    request_id = raw.headers["x-request-id"]
    embedded = raw.parse()
    assert len(embedded.data) == 2
    balance = site.balance_micros(key)
    assert balance < int(SIGNUP_CREDIT * 1_000_000), "the request was charged"

    web.goto("/console")
    page.wait_for_selector(f'#requests-table tr[data-request-id="{request_id}"]')
    assert key not in page.content()  # shown once: never again, not even in the page's source
    charge = page.locator(f'#requests-table tr[data-request-id="{request_id}"]')
    assert "/v1/embeddings" in (charge.locator(".req-endpoint").text_content() or "")
    assert (charge.locator(".req-tokens").text_content() or "").strip() == str(embedded.usage.prompt_tokens)
    assert (charge.locator(".req-images").text_content() or "").strip() == "0"
    assert request_id in (charge.locator(".req-id").text_content() or "")
    assert micros_of_dollars(charge.locator(".req-cost").text_content() or "") == (
        int(SIGNUP_CREDIT * 1_000_000) - balance
    )
    assert micros_of_dollars(page.text_content("#balance") or "") == balance
    web.shot("console-after-request")

    # the 30-day chart: one bar per day of /v1/usage's range, each metric's value for that day
    usage = site.api("GET", "/v1/usage", key).json()
    days = usage_days(usage["start_date"], usage["end_date"])
    per_day = {
        "images": {d: 0.0 for d in days}, "tokens": {d: 0.0 for d in days}, "dollars": {d: 0.0 for d in days},
    }  # fmt: skip
    for row in usage["data"]:
        per_day["images"][row["date"]] += row["images"]
        per_day["tokens"][row["date"]] += row["tokens"]
        per_day["dollars"][row["date"]] += row["cost_micros"] / 1e6
    assert sum(per_day["tokens"].values()) == embedded.usage.prompt_tokens
    for metric in ("tokens", "dollars", "images"):
        page.click(f'button[data-metric="{metric}"]')
        assert page.get_attribute(f'button[data-metric="{metric}"]', "aria-pressed") == "true"
        bars = page.eval_on_selector_all(
            "#usage-chart rect.bar", "bars => bars.map(b => [b.dataset.day, Number(b.dataset.value)])"
        )
        assert [day for day, _ in bars] == days, metric
        for day, value in bars:
            assert abs(value - per_day[metric][day]) <= 1e-9, (metric, day, value, per_day[metric][day])
        if metric == "tokens":
            web.shot("console-usage-tokens")

    revoke = page.locator(f'#keys-table tr[data-key-id="{key_id}"] button.key-revoke')
    with page.expect_response(
        lambda r: f"/v1/account/keys/{key_id}" in r.url and r.request.method == "DELETE"
    ):
        revoke.click()
    page.wait_for_function(
        """(id) => /revoked/i.test(
            document.querySelector(`#keys-table tr[data-key-id="${id}"] .key-status`)?.textContent || "")""",
        arg=key_id,
    )
    web.shot("console-key-revoked")
    with pytest.raises(openai.AuthenticationError) as refused:
        client.embeddings.create(model=MODEL, input=["a photo of a cat"])
    assert refused.value.status_code == 401
    web.assert_clean()


def test_admin_page_lists_accounts_and_grants_credit(
    web: WebPage, site: Site, admin_login: Login, fresh_page: Callable[..., WebPage]
) -> None:
    # the admin login is made by `clipserve keys login --admin` (the admin_login fixture); a customer whose
    # name is markup, to receive a grant
    customer_name = "Customer <img src=x onerror=window.__xss=1> Ltd"
    customer = site.api("POST", "/v1/signup", json={"name": customer_name}).json()
    assert "key" in customer, customer
    customer_id = int(customer["account"]["id"])
    # an operator's admin API key: the independent view of every account
    created = site.cli("keys", "create", "--name", "ops", "--admin")
    admin_key = re.search(r"sk-[A-Za-z0-9_\-]+", created.stdout)
    assert admin_key, created.stdout
    accounts = site.api("GET", "/v1/admin/accounts", admin_key.group(0)).json()["data"]
    assert customer_id in [account["id"] for account in accounts]

    assert sign_in(web, admin_login.email) == 303
    web.goto("/admin")
    page = web.page
    page.wait_for_selector(f'#accounts-table tr[data-account-id="{customer_id}"]')
    for account in accounts:
        row = page.locator(f'#accounts-table tr[data-account-id="{account["id"]}"]')
        assert row.count() == 1, f"account {account['id']} missing from #accounts-table"
        assert (row.locator(".acct-name").text_content() or "").strip() == account["name"]
        assert (
            micros_of_dollars(row.locator(".acct-balance").text_content() or "") == account["balance_micros"]
        )
    web.shot("admin-accounts")

    before = site.balance_micros(customer["key"])
    page.fill("#grant-account", str(customer_id))
    page.fill("#grant-amount", "2.5")
    page.fill("#grant-note", "support credit")
    with page.expect_response(lambda r: f"/v1/admin/accounts/{customer_id}/grants" in r.url) as answer:
        page.click("#grant-submit")
    assert answer.value.status == 200, answer.value.text()
    after = before + 2_500_000
    page.wait_for_function(
        """([id, text]) => (document.querySelector(`#accounts-table tr[data-account-id="${id}"] .acct-balance`)
            ?.textContent || "").includes(text)""",
        arg=[customer_id, f"{after / 1e6:.2f}"],
    )
    balance_cell = page.locator(f'#accounts-table tr[data-account-id="{customer_id}"] .acct-balance')
    assert micros_of_dollars(balance_cell.text_content() or "") == after
    assert site.balance_micros(customer["key"]) == after
    web.shot("admin-after-grant")
    web.assert_clean()

    # a signed-in person who is not an admin is refused the page
    someone = fresh_page("not-admin")
    sign_up(someone, new_email("plain"))
    someone.goto("/admin", expect_status=403)
    someone.shot("admin-forbidden")
