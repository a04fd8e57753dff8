"""Prompt templates for zero-shot classification: one template, or a named set ensembled per class."""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from clipserve.errors import InvalidRequestError

DEFAULT_TEMPLATE = "a photo of a {}."
HF_DEFAULT_TEMPLATE = "This is a photo of {}."  # the transformers pipeline's default

PromptMaker = Callable[[str], str]

NAMED_TEMPLATE_SETS: dict[str, Sequence[PromptMaker]] = {
    "openai-imagenet": OPENAI_IMAGENET_TEMPLATES,  # the 80 prompts of the CLIP paper
    "simple-imagenet": SIMPLE_IMAGENET_TEMPLATES,
}


@dataclass(frozen=True)
class Template:
    """A user template: literal text around one `{}`. Filled by concatenation, never by str.format."""

    before: str
    after: str

    def __call__(self, label: str) -> str:
        return f"{self.before}{label}{self.after}"


def parse_template(template: str, param: str = "template") -> Template:
    """Literal text ('{{' and '}}' are literal braces) and exactly one bare '{}'; anything else is a 400.

    str.format would read attributes ('{0.__class__}'), convert ('{!r}'), pad ('{:>9}') or fail on a stray
    brace; a template is only ever a place to put the label."""
    names = ", ".join(sorted(NAMED_TEMPLATE_SETS))
    usage = (
        "a template is text with exactly one '{}' for the label ('{{' and '}}' are literal braces), "
        f"or one of: {names}"
    )
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:  # a single '{' or '}'
        raise InvalidRequestError(f"{param}: {exc}; {usage}", param=param) from exc
    before: list[str] = []
    after: list[str] = []
    fields = 0
    for literal, field, spec, conversion in parts:
        (after if fields else before).append(literal)
        if field is None:  # literal text only
            continue
        if field != "" or spec or conversion is not None:
            shown = (
                "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            )
            raise InvalidRequestError(f"{param}: {shown!r} is not allowed; {usage}", param=param)
        fields += 1
    if fields != 1:
        raise InvalidRequestError(f"{param} has {fields} '{{}}' placeholders; {usage}", param=param)
    return Template("".join(before), "".join(after))


def template_set(
    template: str | None, *, default: str = DEFAULT_TEMPLATE, param: str = "template"
) -> list[PromptMaker]:
    """The prompt makers a `template` value names: a set name, or one string with a single `{}`."""
    if template is None:
        template = default
    if template in NAMED_TEMPLATE_SETS:
        return list(NAMED_TEMPLATE_SETS[template])
    return [parse_template(template, param)]


def prompts_for(labels: Sequence[str], makers: Sequence[PromptMaker]) -> list[str]:
    """Prompts in label-major order: every template for labels[0], then for labels[1], ..."""
    return [make(label) for label in labels for make in makers]
