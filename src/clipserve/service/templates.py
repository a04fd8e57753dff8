"""Prompt templates for zero-shot classification: one template, or a named set ensembled per class."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from clipserve.errors import InvalidRequestError

DEFAULT_TEMPLATE = "a photo of a {}."
HF_DEFAULT_TEMPLATE = "This is a photo of {}."  # the transformers pipeline's default

PromptMaker = Callable[[str], str]

NAMED_TEMPLATE_SETS: dict[str, Sequence[PromptMaker]] = {
    "openai-imagenet": OPENAI_IMAGENET_TEMPLATES,  # the 80 prompts of the CLIP paper
    "simple-imagenet": SIMPLE_IMAGENET_TEMPLATES,
}


def template_set(template: str | None, *, default: str = DEFAULT_TEMPLATE) -> list[PromptMaker]:
    """The prompt makers a `template` value names: a set name, or one string with a single `{}`."""
    if template is None:
        template = default
    if template in NAMED_TEMPLATE_SETS:
        return list(NAMED_TEMPLATE_SETS[template])
    if template.count("{}") != 1:
        names = ", ".join(sorted(NAMED_TEMPLATE_SETS))
        raise InvalidRequestError(
            f"template must contain exactly one '{{}}' for the label, or be one of: {names}", param="template"
        )
    return [template.format]


def prompts_for(labels: Sequence[str], makers: Sequence[PromptMaker]) -> list[str]:
    """Prompts in label-major order: every template for labels[0], then for labels[1], ..."""
    return [make(label) for label in labels for make in makers]
