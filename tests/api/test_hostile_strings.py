"""Hostile strings and values in every field of every /v1 route: never a 5xx, always an OpenAI error object,
and the server (and the shared collection) still answers normally afterwards.

Each test starts from a request the route accepts (tests/api/hostile_app.py), puts a hostile value in one
place (a body leaf, an object key, a path or query parameter, the Idempotency-Key header) and sends it, with
keys required and in local mode. Bounded by CLIPSERVE_FUZZ (ci: the default; deep: many more examples).
"""

from __future__ import annotations

import random
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.api.hostile_app import (
    COLLECTION,
    HostileServer,
    Operation,
    Slot,
    applies,
    dumps,
    encode_path_segment,
    examples,
    operations,
    send_with,
    slots,
)

# Named hostile strings: each is here because it broke (or could break) something of its class.
_WORDS = random.Random(0)
RANDOM_WORDS = " ".join(
    "".join(_WORDS.choices(string.ascii_lowercase, k=_WORDS.randint(3, 12))) for _ in range(2_000)
)[:20_000]  # 20,000 characters of distinct words: the BPE's worst case, at the text limit
HOSTILE_STRINGS: dict[str, str] = {
    "empty": "",
    "space": " ",
    "whitespace only": " \t\r\n\u3000\u00a0",
    "NUL": "\x00",
    "NUL inside": "a\x00b",
    "NUL only": "\x00\x00\x00",
    "control characters": "".join(chr(c) for c in range(1, 32)) + "\x7f",
    "C1 controls": "\x85\x9b\x9f",
    "lone high surrogate": "\ud800",
    "lone low surrogate": "\udfff",
    "surrogate inside": "a\udc80b",
    "reversed surrogate pair": "\udc00\ud800",
    "BOM": "\ufeff",
    "non-characters": "\ufffe\uffff\U0010ffff",
    "replacement character": "\ufffd",
    "RTL override": "\u202eabc\u202c",
    "RTL and LTR marks": "\u200f\u200e\u2066x\u2069",
    "zero-width": "\u200b\u200c\u200d\u2060",
    "emoji ZWJ family": "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "flag and skin tone": "\U0001f1fa\U0001f1f8\U0001f44d\U0001f3fd",
    "combining marks": "e" + "\u0301\u0308\u0323" * 50,
    "zalgo": "Z\u0351\u0352\u0357\u035b" * 40,
    "non-ASCII": "Zürich café naïve",
    "CJK": "猫の写真",
    "fullwidth": "ａｂｃ",
    "trailing newline": "valid-name\n",
    "trailing CRLF": "valid-name\r\n",
    "leading newline": "\nvalid-name",
    "milvus injection": "zz'] or pk not in ['",
    "milvus expression": 'x" or 1==1 or "',
    "sql injection": "' OR 1=1; DROP TABLE accounts; --",
    "quotes and brackets": "'\"`[]{}()<>",
    "backslashes": "\\\\\\u0000\\x00\\",
    "format attribute": "{0.__class__}",
    "format attribute and slot": "{0.__class__}{}",
    "format braces": "{}{",
    "format close first": "}{}",
    "format repr": "{!r}{}",
    "format escaped": "{{}}",
    "format index": "{0}{1}{2}{99999999999}",
    "percent format": "%s%n%x%d%%",
    "template injection": "${jndi:ldap://x/a}{{7*7}}<%= 7*7 %>",
    "path traversal": "../../../../etc/passwd",
    "windows traversal": "..\\..\\windows\\win.ini",
    "slashes": "a/b//c/",
    "dot": ".",
    "dot dot": "..",
    "url": "http://169.254.169.254/latest/meta-data/",
    "file url": "file:///etc/passwd",
    "data uri garbage": "data:image/png;base64,!!!!",
    "html": "<script>alert(1)</script>",
    "json in string": '{"a": [1, {"b": null}]}',
    "null word": "null",
    "NaN word": "NaN",
    "Infinity word": "Infinity",
    "huge number text": "9" * 400,
    "negative": "-1",
    "exponent": "1e400",
    "leading zeros": "000000001",
    "mongo operator": "$where",
    "dotted key": "a.b.c",
    "long name 129": "n" * 129,
    "long name 201": "n" * 201,
    "long 1001": "d" * 1001,
    "long 20000": "a" * 20_000,
    "long 20001": "a" * 20_001,
    "long words 20000": RANDOM_WORDS,
    "long spaces": " " * 20_000,
    "long emoji": "\U0001f431" * 5_000,
    "long surrogates": "\ud800" * 1_000,
    "long combining": "a" + "\u0301" * 10_000,
}


def _concat(parts: list[str]) -> str:
    return "".join(parts)


# Any code point, lone surrogates included (Hypothesis leaves category Cs out unless told).
ANY_CHARACTER = st.characters(exclude_categories=())
NAMED = st.sampled_from(list(HOSTILE_STRINGS.values()))
hostile_strings = st.one_of(
    NAMED,
    NAMED,  # twice: the named strings are the likelier finds
    st.text(ANY_CHARACTER, max_size=40),
    st.lists(
        st.one_of(NAMED, st.text(ANY_CHARACTER, max_size=8), st.just("a cat")), min_size=2, max_size=4
    ).map(_concat),
)

# Values that are not (only) strings: given as raw JSON text, so NaN, Infinity, 1e400 and deep nesting reach
# the server exactly as an attacker would write them.
RAW_VALUES: dict[str, str] = {
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "1e400": "1e400",
    "-1e400": "-1e400",
    "1e-400": "1e-400",
    "-0": "-0",
    "max float": "1.7976931348623157e308",
    "2**63": str(2**63),
    "-2**63-1": str(-(2**63) - 1),
    "10**30": "1" + "0" * 30,
    "4000 digits": "7" * 4_000,
    "5000 digits": "7" * 5_000,
    "-1": "-1",
    "0": "0",
    "0.5": "0.5",
    "true": "true",
    "false": "false",
    "null": "null",
    "empty list": "[]",
    "empty object": "{}",
    "list of null": "[null]",
    "list of NaN": "[NaN, Infinity]",
    "nested list 50": "[" * 50 + "]" * 50,
    "nested object 300": '{"a":' * 300 + "1" + "}" * 300,
    "nested list 1000": "[" * 1_000 + "]" * 1_000,
    "nested object 1000": '{"a":' * 1_000 + "1" + "}" * 1_000,
    "object with surrogate key": '{"\\ud800": 1}',
    "object with NUL key": '{"\\u0000": "\\u0000"}',
    "duplicate keys": '{"a": 1, "a": [2]}',
    "many keys": "{" + ",".join(f'"k{i}": {i}' for i in range(2_000)) + "}",
    "long list": "[" + ",".join(["1"] * 10_000) + "]",
    "list of strings": '["a", "\\ud800", ""]',
    "text item": '{"text": "a cat"}',
    "image item": '{"image": "data:image/png;base64,AAAA"}',
    "vector": "[" + ",".join(["0.5"] * 512) + "]",
    "huge vector values": "[" + ",".join(["1e308"] * 512) + "]",
}
# Path and query parameters are text: what a hostile value looks like there.
PARAM_VALUES = ["NaN", "Infinity", "1e400", "-1", "0", str(2**63), "9" * 400, "", "true", "0001-01-01", "9999-12-31",
                "-0001-01-01", "2024-02-30", "2024-13-01", "+10000-01-01", "1" * 5_000]  # fmt: skip
# Swept through every string field of every route on every run (the Hypothesis tests explore the rest).
CORE_STRINGS = [
    HOSTILE_STRINGS[name]
    for name in ("lone high surrogate", "NUL inside", "trailing newline", "milvus injection",
                 "format attribute and slot", "format braces", "path traversal", "non-ASCII", "huge number text")
]  # fmt: skip
IDEMPOTENT_ROUTES = {
    "POST /v1/embeddings",
    "POST /v1/classify",
    "POST /v1/rank",
    "POST /v1/collections/{name}/items",
}


def _cases(strings_only: bool) -> list[Any]:
    out = []
    for mode in ("auth", "local"):
        for op in operations():
            if applies(op, mode) and slots(op, strings_only=strings_only):
                out.append(pytest.param(mode, op.id, id=f"{mode}-{op.id}"))
    return out


def _server(request: pytest.FixtureRequest, mode: str) -> HostileServer:
    server: HostileServer = request.getfixturevalue(f"{mode}_server")
    return server


def _describe(server: HostileServer, op: Operation, slot: Slot, value: Any) -> str:
    shown = repr(value)
    if len(shown) > 200:
        shown = f"{shown[:120]}...({len(shown)} chars)...{shown[-40:]}"
    return f"[{server.mode}] {op.id}: {slot[0]} {'.'.join(map(str, slot[1])) or '(body)'} = {shown}"


def _after(server: HostileServer, op: Operation, what: str, count_before: int | None) -> None:
    """The server, and the shared collection if the route touches it, still answer normally."""
    try:
        server.check_still_serving(what)
        if op.touches_collection or COLLECTION in op.path_params.values():
            server.check_collection_still_serving(what)
    except AssertionError:
        server.reset()  # so that one poisoned item fails this example, not every later one
        raise
    if count_before is not None:
        # deleting one (hostile) id removes at most that one item, never the rest of the collection
        count_after = server.item_count()
        if count_after != count_before:
            server.reset()
        assert count_after >= count_before - 1, f"{what} deleted {count_before - count_after} items"


def _check_stored_ids_round_trip(server: HostileServer, op: Operation, response: Any, what: str) -> None:
    """Every item an add reports stored can be read back by its id (an id stored but unreachable is a defect)."""
    if op.method != "POST" or not op.path.endswith("/items") or response.status_code != 200:
        return
    for row in response.json().get("data", []):
        if row.get("status") == "ok":
            got = server.send("GET", f"/v1/collections/{COLLECTION}/items/{encode_path_segment(row['id'])}")
            assert got.status_code == 200, (
                f"{what}: stored id {row['id']!r} cannot be read back: {got.text[:300]}"
            )


def _count_if_deleting_items(server: HostileServer, op: Operation) -> int | None:
    return server.item_count() if op.method == "DELETE" and "item_id" in op.path_params else None


@pytest.mark.parametrize(("mode", "op_id"), _cases(strings_only=False))
def test_each_request_the_suite_starts_from_is_accepted(
    request: pytest.FixtureRequest, mode: str, op_id: str
) -> None:
    """Guards the suite itself: the baseline requests must succeed, or hostile values never get past validation."""
    server = _server(request, mode)
    server.restore()
    op = server.operations()[op_id]
    response = op.send(server)
    assert response.status_code in (200, 201), (
        f"{op.id} ({mode}): {response.status_code} {response.text[:400]}"
    )
    server.restore()


@pytest.mark.parametrize(("mode", "op_id"), _cases(strings_only=True))
def test_every_string_field_takes_the_core_hostile_strings(
    request: pytest.FixtureRequest, mode: str, op_id: str
) -> None:
    """Each core hostile string in each string field, path and query parameter: all failures listed at once."""
    server = _server(request, mode)
    op = server.operations()[op_id]
    failures: dict[str, str] = {}
    for slot in sweep_slots(op):
        for value in CORE_STRINGS:
            what = _describe(server, op, slot, value)
            count_before = _count_if_deleting_items(server, op)
            try:
                response = send_with(server, op, slot, value)
                server.check(response, what)
                _check_stored_ids_round_trip(server, op, response, what)
                if count_before is not None:  # a delete: checked value by value
                    _after(server, op, what, count_before)
            except AssertionError as failure:
                # one entry per field and outcome: the same 500 for every value is one defect
                lines = str(failure).splitlines()
                failures.setdefault(
                    f"{slot} {lines[1][:12] if len(lines) > 1 else lines[0][-30:]}", str(failure)
                )
        try:  # once per field (not per value) to stay fast: the values sent are named if it fails
            _after(
                server, op, _describe(server, op, slot, f"<each of {len(CORE_STRINGS)} core strings>"), None
            )
        except AssertionError as failure:
            failures[f"{slot} after"] = str(failure)
            server.reset()
    assert not failures, f"{len(failures)} distinct failure(s):\n\n" + "\n\n".join(failures.values())


# Swept through every field (objects and lists too) of every route on every run.
CORE_VALUES = ["null", "NaN", "1e400", str(2**63), "[]", "{}", '{"a":' * 300 + "1" + "}" * 300]
CORE_PARAMETER_VALUES = ["0001-01-01", "9999-12-31", "-1"]  # path and query parameters only


@pytest.mark.parametrize(("mode", "op_id"), _cases(strings_only=False))
def test_every_field_takes_the_core_hostile_values(
    request: pytest.FixtureRequest, mode: str, op_id: str
) -> None:
    """Each core raw JSON value in each field, object and list (text forms in parameters): failures listed."""
    server = _server(request, mode)
    op = server.operations()[op_id]
    failures: dict[str, str] = {}
    for slot in slots(op, strings_only=False):
        if slot[0] == "body-key":
            continue  # keys are text: the string sweep above covers them
        for value in CORE_VALUES + (CORE_PARAMETER_VALUES if slot[0] != "body" else []):
            what = _describe(server, op, slot, f"<raw {value[:20]}>")
            count_before = _count_if_deleting_items(server, op)
            try:
                raw = value.encode() if slot[0] == "body" else None
                server.check(send_with(server, op, slot, value, raw=raw), what)
                if slot[0] == "query":  # alone too: the other parameters' defaults are then in play
                    alone = f"{encode_path_segment(slot[1][0])}={encode_path_segment(value)}"
                    server.check(
                        server.send(op.method, op.url(), query=alone), f"{what} (the only parameter)"
                    )
                if count_before is not None:
                    _after(server, op, what, count_before)
            except AssertionError as failure:
                lines = str(failure).splitlines()
                failures.setdefault(
                    f"{slot} {lines[1][:12] if len(lines) > 1 else lines[0][-30:]}", str(failure)
                )
        if op.touches_collection:  # a stored value may poison later reads: checked field by field
            try:
                _after(server, op, _describe(server, op, slot, "<each core value>"), None)
            except AssertionError as failure:
                failures[f"{slot} after"] = str(failure)
    try:
        _after(server, op, f"[{mode}] {op.id}: each core value in each field", None)
    except AssertionError as failure:
        failures["after"] = str(failure)
    assert not failures, f"{len(failures)} distinct failure(s):\n\n" + "\n\n".join(failures.values())


def sweep_slots(op: Operation) -> list[Slot]:
    """The sweep's fields: every string leaf and parameter, and the keys of free-form objects only (the
    Hypothesis tests below also try every other key)."""
    free_form = ("metadata", "filter", "query", "parameters")
    return [
        slot for slot in slots(op, strings_only=True)
        if slot[0] != "body-key" or any(part in free_form for part in slot[1][:-1])
    ]  # fmt: skip


@pytest.mark.parametrize(("mode", "op_id"), _cases(strings_only=True))
@settings(max_examples=examples(12))
@given(data=st.data())
def test_hostile_strings_in_every_string_field(
    request: pytest.FixtureRequest, mode: str, op_id: str, data: st.DataObject
) -> None:
    server = _server(request, mode)
    op = server.operations()[op_id]
    targets = slots(op, strings_only=True)
    if op.method == "POST" and op.path in IDEMPOTENT_ROUTES:
        targets.append(("header", ("Idempotency-Key",)))
    slot = data.draw(st.sampled_from(targets), label="slot")
    value = data.draw(hostile_strings, label="value")
    what = _describe(server, op, slot, value)
    count_before = _count_if_deleting_items(server, op)
    if slot[0] == "header":
        response = _send_with_header(server, op, slot[1][0], value)
    else:
        response = send_with(server, op, slot, value)
    server.check(response, what)
    _check_stored_ids_round_trip(server, op, response, what)
    _after(server, op, what, count_before)


@pytest.mark.parametrize(("mode", "op_id"), _cases(strings_only=False))
@settings(max_examples=examples(10))
@given(data=st.data())
def test_hostile_values_in_every_field(
    request: pytest.FixtureRequest, mode: str, op_id: str, data: st.DataObject
) -> None:
    """Raw JSON values (NaN, Infinity, 1e400, huge integers, deep nesting, wrong types) in every field."""
    server = _server(request, mode)
    op = server.operations()[op_id]
    slot = data.draw(st.sampled_from(slots(op, strings_only=False)), label="slot")
    count_before = _count_if_deleting_items(server, op)
    if slot[0] in ("path", "query"):
        value: Any = data.draw(st.sampled_from(PARAM_VALUES), label="value")
        what = _describe(server, op, slot, value)
        response = send_with(server, op, slot, value)
    elif slot[0] == "body-key":
        value = data.draw(st.sampled_from(list(RAW_VALUES.values())), label="value")
        what = _describe(server, op, slot, value)
        response = send_with(server, op, slot, value)
    else:
        name = data.draw(st.sampled_from(list(RAW_VALUES)), label="value")
        value = RAW_VALUES[name]
        what = _describe(server, op, slot, f"<raw {name}>")
        response = send_with(server, op, slot, None, raw=value.encode())
    server.check(response, what)
    _after(server, op, what, count_before)


def _send_with_header(server: HostileServer, op: Operation, name: str, value: str) -> Any:
    # An HTTP server never hands the app CR, LF, NUL or other controls in a header (h11 refuses them), so
    # sending them in-process would test nothing real; the rest goes out as the UTF-8 bytes a client sends.
    cleaned = "".join(c for c in value if c == "\t" or not (ord(c) < 32 or ord(c) == 127))
    encoded = cleaned.encode("utf-8", "surrogatepass").strip()
    content = None if op.body is None else dumps(op.body)
    return server.send(op.method, op.url(), content=content, query=op.query_string(), headers={name: encoded})
