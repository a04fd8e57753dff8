"""Milvus boolean expressions built from a template of our own text and separate parameters.

User data (item ids, filter values) never meets the expression text until `render`, which writes each
parameter as one literal. Field names are not parameters: they are restricted by the filter parser to
letters, digits, '_' and '-' and written by us.

Why not Milvus's server-side templates (`filter_params`): Milvus Lite (3.2, the store the contract suite runs
on) does not parse them ("unexpected character '{'"), and one rendering path tested on every backend beats
two. The literal writer uses only what both Milvus grammars (the server's ANTLR `Plan.g4` and Milvus Lite's
tokenizer) read the same way: double quotes, the escapes \\ \" \n \r, every other character raw, which keeps
non-ASCII text as itself (json.dumps' \\u00fc escapes are not Milvus syntax).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from clipserve.vectors.filters import AllOf, AnyOf, Filter, Scalar

Param = Scalar | tuple[Scalar, ...]
_PLACEHOLDER = re.compile(r"\{(p\d+)\}")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"}
_STRING_SPECIALS = re.compile(r'[\\"\n\r]')
_COMPARISONS = {"$eq": "==", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def literal(value: Param) -> str:
    """One value as a Milvus literal; a string can never end early or escape its quotes."""
    if isinstance(value, tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + _STRING_SPECIALS.sub(lambda m: _ESCAPES[m.group()], value) + '"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    raise ValueError(f"not a Milvus literal: {value!r}")  # the parsers never let one through


@dataclass(frozen=True)
class Expression:
    template: str  # our text; {p0}, {p1}, ... mark the parameters
    params: dict[str, Param]

    def render(self) -> str:
        """The expression text, each parameter written as one literal in a single pass (a value that looks
        like a placeholder stays a value)."""
        return _PLACEHOLDER.sub(lambda m: literal(self.params[m.group(1)]), self.template)


class _Builder:
    def __init__(self) -> None:
        self.params: dict[str, Param] = {}

    def param(self, value: Param) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return "{" + name + "}"


def ids_in(field: str, ids: list[str]) -> Expression:
    """`field in [ids]` for primary keys."""
    builder = _Builder()
    return Expression(f"{field} in {builder.param(tuple(ids))}", builder.params)


def search_filter(
    tree: Filter | None, exclude_id: str | None, *, id_field: str, metadata_field: str
) -> Expression | None:
    """A search's filter over the JSON field `metadata_field`, ANDed with `id_field != exclude_id` when
    given; None when there is nothing to filter."""
    builder = _Builder()
    parts = [] if tree is None else [_filter_text(tree, metadata_field, builder)]
    if exclude_id is not None:
        parts.append(f"{id_field} != {builder.param(exclude_id)}")
    if not parts:
        return None
    return Expression(" and ".join(f"({part})" for part in parts), builder.params)


def _filter_text(tree: Filter, metadata_field: str, builder: _Builder) -> str:
    if isinstance(tree, AllOf | AnyOf):
        joiner = " and " if isinstance(tree, AllOf) else " or "
        return "(" + joiner.join(_filter_text(part, metadata_field, builder) for part in tree.parts) + ")"
    field = metadata_field + "".join(f'["{part}"]' for part in tree.field.split("."))
    if tree.op in ("$in", "$nin"):
        assert isinstance(tree.value, tuple)
        # as ORed equalities: Milvus Lite's parser takes `in` on plain fields only, not on JSON keys
        expression = "(" + " or ".join(f"{field} == {builder.param(v)}" for v in tree.value) + ")"
        return f"(not {expression} or not exists {field})" if tree.op == "$nin" else expression
    assert not isinstance(tree.value, tuple)
    expression = f"{field} {_COMPARISONS[tree.op]} {builder.param(tree.value)}"
    if tree.op == "$ne":
        return f"({expression} or not exists {field})"
    return expression
