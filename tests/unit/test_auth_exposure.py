"""Auth may be off only on loopback (or when forced)."""

from __future__ import annotations

import pytest

from clipserve.service.auth import exposure_problem, is_loopback


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                                ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                                ("10.1.2.3", False), ("example.com", False)])  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_auth_off_on_loopback_is_fine() -> None:
    assert exposure_problem("auto", False, "127.0.0.1", False) is None
    assert exposure_problem("off", False, "127.0.0.1", False) is None


def test_auth_off_on_a_public_address_is_refused_unless_forced() -> None:
    problem = exposure_problem("auto", False, "0.0.0.0", False)
    assert problem is not None
    assert "--allow-unauthenticated" in problem
    assert exposure_problem("off", True, "0.0.0.0", False) is not None  # off means off, keys or not
    assert exposure_problem("auto", False, "0.0.0.0", True) is None


def test_auth_on_or_keys_present_may_serve_anywhere() -> None:
    assert exposure_problem("auto", True, "0.0.0.0", False) is None
    assert exposure_problem("on", False, "0.0.0.0", False) is None
