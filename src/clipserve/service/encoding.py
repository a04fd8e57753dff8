"""How a vector goes on the wire: a float list, base64 of little-endian float32 (as the openai client reads it),
or its sign bits packed into bytes (Jina's and sentence-transformers' binary/ubinary)."""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np

from clipserve.errors import InvalidRequestError

EncodingFormat = Literal["float", "base64", "binary", "ubinary"]


def encode_vector(vector: np.ndarray, encoding_format: EncodingFormat) -> list[float] | list[int] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    if encoding_format in ("binary", "ubinary"):
        # One bit per dimension, 1 where the value is > 0, most significant bit first (np.packbits' order);
        # binary is the same bytes shifted into int8 (value - 128), as sentence-transformers defines it.
        packed = np.packbits(np.asarray(vector) > 0).astype(np.int16)
        integers: list[int] = (packed - 128 if encoding_format == "binary" else packed).tolist()
        return integers
    values: list[float] = np.asarray(vector, dtype=np.float32).tolist()
    return values


def choose_encoding(
    encoding_format: Literal["float", "base64"] | None, embedding_type: EncodingFormat | None
) -> EncodingFormat:
    """The wire format from OpenAI's `encoding_format` or Jina's `embedding_type` (both: they must agree)."""
    if encoding_format is not None and embedding_type is not None and encoding_format != embedding_type:
        raise InvalidRequestError(
            f"encoding_format={encoding_format!r} and embedding_type={embedding_type!r} disagree: send one",
            param="embedding_type",
        )
    return embedding_type or encoding_format or "float"


def decode_base64_vector(encoded: str) -> np.ndarray:
    """The inverse of encode_vector(..., "base64")."""
    return np.frombuffer(base64.b64decode(encoded), dtype="<f4")
