from __future__ import annotations

import base64

import numpy as np

from clipserve.service.encoding import decode_base64_vector, encode_vector


def test_base64_is_little_endian_float32_and_round_trips_exactly() -> None:
    vector = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    encoded = encode_vector(vector, "base64")
    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded)
    assert len(raw) == 512 * 4
    assert np.array_equal(np.frombuffer(raw, dtype="<f4"), vector)
    assert np.array_equal(decode_base64_vector(encoded), vector)


def test_float_encoding_keeps_float32_values_exactly() -> None:
    vector = np.random.default_rng(1).standard_normal(8).astype(np.float32)
    values = encode_vector(vector, "float")
    assert isinstance(values, list)
    assert np.array_equal(np.asarray(values, dtype=np.float32), vector)
