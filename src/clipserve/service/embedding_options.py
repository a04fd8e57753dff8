"""The /v1/embeddings options that other APIs' clients send (Jina's), where this service cannot honour them."""

from __future__ import annotations

from clipserve.errors import InvalidRequestError


def check_jina_options(*, normalized: bool, late_chunking: bool | None) -> None:
    """Refuse the Jina options this service cannot honour, instead of ignoring them.

    normalized=false would mean the raw projection (open_clip's encode_* without normalize); the runtime
    normalizes inside its batches and every other route relies on unit vectors, so it is refused, not faked.
    """
    if not normalized:
        raise InvalidRequestError(
            "normalized=false is not supported: clipserve serves unit-length CLIP embeddings only "
            "(cosine similarity is their dot product); omit 'normalized' or send true",
            param="normalized",
        )
    if late_chunking:
        raise InvalidRequestError(
            "late_chunking=true is not supported: CLIP embeds each item on its own (77 tokens at most)",
            param="late_chunking",
        )
