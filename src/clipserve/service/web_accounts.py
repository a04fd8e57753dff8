"""Web accounts: sign-up, sign-in, sign-out and session lookup for the pages (and cookie-authenticated /v1).

Passwords are argon2id (service/passwords.py); sessions are server-side rows keyed by the SHA-256 of a random
cookie token; each session carries its own CSRF token. Every blocking store call runs on the store's threads,
every hash on the password pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from clipserve.errors import AuthenticationError, ConflictError, InvalidRequestError, PermissionDeniedError
from clipserve.service.passwords import MAX_PASSWORD_CHARS, PasswordHashing
from clipserve.service.signin_throttle import SigninThrottle
from clipserve.store.logins import LoginStore, NewSignup
from clipserve.store.records import KeyRecord, LoginRecord
from clipserve.store.web_sessions import WebSessionStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_EMAIL_CHARS = 254
# local@domain.tld: no spaces, one @, a dot in the domain, a 2+ letter top-level label
_EMAIL = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@.]{2,}$")
WRONG_CREDENTIALS = "Incorrect email or password."


@dataclass(frozen=True)
class WebSession:
    account_id: int
    login_id: int
    email: str
    is_admin: bool
    csrf_token: str


@dataclass(frozen=True)
class SignupPolicy:
    enabled: bool
    credit_micros: int
    per_address_per_day: int
    password_min_length: int = 8


def normalize_email(email: str) -> str:
    """Trimmed, lowercased, `local@domain.tld`, at most 254 characters; else InvalidRequestError."""
    cleaned = email.strip().lower()
    if len(cleaned) > MAX_EMAIL_CHARS or not _EMAIL.match(cleaned):
        raise InvalidRequestError(
            "enter an email address like name@example.com", param="email", code="invalid_email"
        )
    return cleaned


def session_id(token: str) -> bytes:
    """What the database stores for a session token: its SHA-256 (the token is 256 random bits)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def check_password_length(password: str, min_length: int) -> None:
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidRequestError(
            f"passwords are at most {MAX_PASSWORD_CHARS} characters",
            param="password",
            code="invalid_password",
        )
    if len(password) < min_length:
        raise InvalidRequestError(
            f"choose a password of at least {min_length} characters",
            param="password",
            code="invalid_password",
        )


class WebAccounts:
    """context.web_accounts: what the sign-in pages and cookie authentication call."""

    def __init__(
        self,
        logins: LoginStore,
        sessions: WebSessionStore,
        passwords: PasswordHashing,
        throttle: SigninThrottle,
        policy: SignupPolicy,
        store_pool: Executor,
        on_key_created: Callable[[], None] = lambda: None,
    ) -> None:
        self.logins = logins
        self.sessions = sessions
        self.passwords = passwords
        self.throttle = throttle
        self.policy = policy
        self._pool = store_pool
        self._on_key_created = on_key_created

    async def sign_up(
        self, email: str, password: str, name: str | None, address: str
    ) -> tuple[WebSession, str]:
        """A new account with the free credit, its login and a session: (session, cookie token)."""
        policy = self.policy
        if not policy.enabled:
            raise PermissionDeniedError("sign-up is closed on this server", code="signup_disabled")
        email = normalize_email(email)
        check_password_length(password, policy.password_min_length)
        display = (name or "").strip()[:200] or email
        # refuse an address over its limit before paying for a hash (the transaction checks again)
        await self._run(lambda: self.logins.accounts.signups_left(address, policy.per_address_per_day))
        # a taken email is a failed attempt, throttled like sign-in's: sign-up must not probe emails freely
        await self._run(lambda: self.throttle.check(email, address))
        password_hash = await self.passwords.hash(password)
        signup = NewSignup(email, password_hash, display, policy.credit_micros, policy.per_address_per_day)
        try:
            _, login, _ = await self._run(lambda: self.logins.sign_up(address, signup))
        except ConflictError:
            await self._run(lambda: self.throttle.record_failure(email, address))
            raise
        self._on_key_created()  # the console key: in auto mode, authentication is on from now
        logger.info("web sign-up: account %d", login.account_id)
        return await self._new_session(login)

    async def sign_in(self, email: str, password: str, address: str) -> tuple[WebSession, str]:
        """A fresh session (never a presented one) for the right email and password: (session, token)."""
        email = normalize_email(email)
        if len(password) > MAX_PASSWORD_CHARS:
            check_password_length(password, 0)
        # the attempt counts as a failure from before its hash until it turns out right, so concurrent guesses
        # cannot all pass the check while the first ones are still hashing
        attempt = await self._run(lambda: self.throttle.reserve(email, address))
        login = await self._run(lambda: self.logins.find(email))
        matched = await self.passwords.verify(login.password_hash if login else None, password)
        if login is None or not matched:
            raise AuthenticationError(WRONG_CREDENTIALS, code="invalid_credentials")
        await self._run(lambda: self.throttle.succeeded(attempt))
        if self.passwords.needs_rehash(login.password_hash):  # the configured cost went up: upgrade it
            upgraded = await self.passwords.hash(password)
            await self._run(lambda: self.logins.set_password_hash(login.id, upgraded))
        await self._run(lambda: self.logins.console_key(login))
        return await self._new_session(login)

    async def sign_out(self, token: str) -> None:
        await self._run(lambda: self.sessions.delete(session_id(token)))

    async def resolve(self, token: str | None) -> WebSession | None:
        """The live session this cookie token names, else None (unknown, expired or idle too long)."""
        found = await self.resolve_with_key(token)
        return found[0] if found else None

    async def resolve_with_key(self, token: str | None) -> tuple[WebSession, KeyRecord] | None:
        """The live session and its account's console key (what a session caller is metered through)."""
        if not token or len(token) > 128:
            return None
        found = await self._run(lambda: self.sessions.find(session_id(token)))
        if found is None or found.console_key is None:
            return None
        login, row = found.login, found.session
        session = WebSession(row.account_id, login.id, login.email, login.is_admin, row.csrf_token)
        return session, found.console_key

    async def _new_session(self, login: LoginRecord) -> tuple[WebSession, str]:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        await self._run(lambda: self.sessions.create(session_id(token), login, csrf))
        return WebSession(login.account_id, login.id, login.email, login.is_admin, csrf), token

    def close(self) -> None:
        self.passwords.close()

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)
