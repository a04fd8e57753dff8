"""How a vector goes on the wire: a float list, or base64 of little-endian float32 (as the openai client reads it)."""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np

EncodingFormat = Literal["float", "base64"]


def encode_vector(vector: np.ndarray, encoding_format: EncodingFormat) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    values: list[float] = np.asarray(vector, dtype=np.float32).tolist()
    return values


def decode_base64_vector(encoded: str) -> np.ndarray:
    """The inverse of encode_vector(..., "base64")."""
    return np.frombuffer(base64.b64decode(encoded), dtype="<f4")
