"""The text tower run only as far as each batch's longest real sequence.

open_clip's text transformer is causal and pools at the end-of-text token, so the output at that token depends
only on the tokens before it: positions after the longest sequence in a batch are padding that the pooled
output never sees. Cutting them off computes the same embedding (to float rounding) in a fraction of the time
for short prompts ("a photo of a {}." is 8 tokens of 77).
"""

from __future__ import annotations

import open_clip
import torch
from open_clip.transformer import text_global_pool


def supports_truncation(model: torch.nn.Module) -> bool:
    """True for open_clip's built-in CLIP text tower (causal mask, argmax/eos pooling)."""
    return (
        isinstance(model, open_clip.CLIP)
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", "argmax") in ("argmax", "eos")
    )


def used_length(ids: torch.Tensor) -> int:
    """Positions up to and including the last end-of-text token in the batch (EOT has the largest id)."""
    return int(ids.argmax(dim=-1).max().item()) + 1


def encode_text_truncated(model: open_clip.CLIP, ids: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_text on ids[:, :L] with the positional embedding and causal mask cut to L."""
    length = used_length(ids)
    ids = ids[:, :length]
    # (the embedding's dtype: transformer.get_cast_dtype() fails on int8-quantized Linear layers)
    cast_dtype = model.token_embedding.weight.dtype
    x = model.token_embedding(ids).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, ids, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    projected: torch.Tensor
    if isinstance(model.text_projection, torch.nn.Linear):
        projected = model.text_projection(x)
    else:
        projected = x @ model.text_projection
    return projected


def length_groups(ids: torch.Tensor) -> list[torch.Tensor]:
    """Row indices split in at most two groups by prompt length, when that cuts the work (rows x positions).

    A batch padded to its longest prompt wastes work on short prompts beside a long one; splitting at the point
    that minimises sum(rows * longest) recovers most of it. Results are per row, so grouping changes nothing.
    """
    lengths = ids.argmax(dim=-1) + 1
    order = torch.argsort(lengths, stable=True)
    sorted_lengths = lengths[order].tolist()
    n = len(sorted_lengths)
    best_split, best_cost = n, n * sorted_lengths[-1]
    for split in range(1, n):
        cost = split * sorted_lengths[split - 1] + (n - split) * sorted_lengths[-1]
        if cost < best_cost:
            best_split, best_cost = split, cost
    if best_cost > 0.8 * n * sorted_lengths[-1]:  # under 20% saved: one batch is cheaper to run
        return [torch.arange(n)]
    return [order[:best_split], order[best_split:]]
