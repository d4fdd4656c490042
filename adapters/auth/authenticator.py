"""Authentication of a request: HTTP Basic (the Authorization header) or a WS-Security
UsernameToken (the SOAP header), checked against the users table; the result is a
:class:`headend.access.Principal` or an :class:`AuthError`.

Lockout: ``max_failures`` failed logins of one name within ``window_seconds`` lock it for
``lockout_seconds`` (403, reason "locked", whatever the password). Names that are not users
are counted and locked the same way and get the same answers, and a password is checked
against a dummy hash of the same cost when the user does not exist, so neither the answer nor
its timing tells a caller which names exist. Only a caller who gives the right password of a
disabled user learns that it is disabled (403 "disabled").

Every failure is logged (logger ``openhes.auth``, WARNING) with the name tried, the method,
the peer and the reason, never the password; lockouts are also written to the audit log.

A successful password check is remembered for ``cache_seconds`` (an HMAC of name and
password under a random key that exists only in this process's memory), so a client sending
Basic credentials with every request does not pay scrypt each time; changing the password
invalidates it at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from adapters.auth.passwords import (
    PasswordError,
    ScryptParams,
    dummy_hash,
    open_digest_secret,
    verify_password,
)
from adapters.auth.schema import PEER_LENGTH, USER_NAME_LENGTH, login_failures, users, wss_nonces
from adapters.auth.users import OBJECT_TYPE, add_user, disable, roles_of, set_password
from adapters.auth.wssecurity import (
    DIGEST,
    SecurityHeader,
    TokenError,
    TokenPolicy,
    UsernameToken,
    check_fresh,
    parse_security,
)
from headend.access import Principal
from headend.keys import Keyring, MasterKeyError
from mdm import audit
from mdm.database import Store

log = logging.getLogger("openhes.auth")

BASIC = "basic"
WSS = "wss"
AUDIT_WHO = "openhes-auth"
MAX_AUTHORIZATION_CHARS = 4096

# Reasons given to callers. They never say whether a name exists.
BAD_CREDENTIALS = "bad credentials"
LOCKED = "locked"
DISABLED = "disabled"
NO_CREDENTIALS = "no credentials"
REPLAYED = "replayed UsernameToken"


class AuthError(Exception):
    """Authentication refused. ``status``: 401 (no or bad credentials; ``challenge`` is the
    WWW-Authenticate value to send) or 403 (locked, disabled). ``must_understand``: a
    Security header marked mustUnderstand carried what OpenHES does not process (a SOAP
    MustUnderstand fault suits it best)."""

    def __init__(
        self,
        reason: str,
        status: int = 401,
        *,
        challenge: str | None = None,
        must_understand: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.challenge = challenge if status == 401 else None
        self.must_understand = must_understand

    def __repr__(self) -> str:
        return f"AuthError({self.reason!r}, {self.status})"


@dataclass(frozen=True)
class LockoutPolicy:
    """``max_failures`` failed logins within ``window_seconds`` lock the name for
    ``lockout_seconds``. ``max_failures`` 0 turns lockout off."""

    max_failures: int = 5
    window_seconds: float = 900.0
    lockout_seconds: float = 900.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise ValueError("max_failures must be a whole number, 0 for no lockout")
        if self.window_seconds <= 0 or self.lockout_seconds <= 0:
            raise ValueError("the failure window and the lockout must be positive durations")

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.window_seconds)

    @property
    def lockout(self) -> timedelta:
        return timedelta(seconds=self.lockout_seconds)


@dataclass(frozen=True)
class _Account:
    """What one query says about a name: the user (None when it is not one) and its
    failure state."""

    exists: bool
    roles: str = ""
    password_hash: str = ""
    digest_secret: str | None = None
    enabled: bool = False
    failure_row: bool = False
    locked_until: datetime | None = None


class _VerifiedCache:
    """Recent successful password checks: HMAC(name, password) under a per-process key ->
    (stored hash it matched, expiry). Bounded; oldest out first."""

    def __init__(self, seconds: float, size: int) -> None:
        self._seconds = seconds
        self._size = size
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _mac(self, name: str, password: str) -> bytes:
        data = (
            name.encode("utf-8", "surrogatepass")
            + b"\0"
            + password.encode("utf-8", "surrogatepass")
        )
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def hit(self, name: str, password: str, stored_hash: str) -> bool:
        if self._seconds <= 0:
            return False
        mac = self._mac(name, password)
        with self._lock:
            entry = self._entries.get(mac)
            if entry is None:
                return False
            if entry[1] < time.monotonic() or not hmac.compare_digest(entry[0], stored_hash):
                del self._entries[mac]
                return False
            return True

    def add(self, name: str, password: str, stored_hash: str) -> None:
        if self._seconds <= 0:
            return
        mac = self._mac(name, password)
        with self._lock:
            self._entries[mac] = (stored_hash, time.monotonic() + self._seconds)
            self._entries.move_to_end(mac)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


@dataclass(frozen=True)
class BasicCredentials:
    name: str
    password: str = ""

    def __repr__(self) -> str:
        return f"BasicCredentials({self.name!r})"


def parse_basic(authorization: str) -> BasicCredentials | None:
    """The credentials of an ``Authorization: Basic ...`` value (RFC 7617, UTF-8); None for
    another scheme; :class:`AuthError` when it is malformed."""
    if len(authorization) > MAX_AUTHORIZATION_CHARS:
        raise AuthError("malformed Authorization header")
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise AuthError("malformed Basic credentials") from None
    name, colon, password = decoded.partition(":")
    if not colon or not name:
        raise AuthError("malformed Basic credentials")
    return BasicCredentials(name, password)


def _printable(text: str) -> str:
    """Text for one log line: control characters escaped, so a caller cannot forge lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _shown(name: str | None) -> str:
    """A name as written to the log: quoted, escaped, cut short."""
    if name is None:
        return "-"
    return repr(name if len(name) <= USER_NAME_LENGTH else name[:USER_NAME_LENGTH] + "...")


class Authenticator:
    """Checks the credentials of requests against the users of ``store``."""

    def __init__(
        self,
        store: Store,
        policy: LockoutPolicy | None = None,
        *,
        token_policy: TokenPolicy | None = None,
        keyring: Keyring | None = None,
        params: ScryptParams | None = None,
        cache_seconds: float = 60.0,
        cache_size: int = 4096,
        realm: str = "OpenHES",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or LockoutPolicy()
        self.token_policy = token_policy or TokenPolicy()
        self._keyring = keyring
        self._params = params or ScryptParams.from_env()
        # Made now, so that the first unknown name does not cost two hashes.
        self._dummy = dummy_hash(self._params)
        self._cache = _VerifiedCache(cache_seconds, cache_size)
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'
        self._clock = clock or (lambda: datetime.now(UTC))
        self._last_prune = float("-inf")

    # --- the entry point ------------------------------------------------------------------

    def authenticate(
        self,
        *,
        authorization: str | None,
        soap_header: etree._Element | None,
        peer: str | None,
    ) -> Principal:
        """The principal the request's credentials name, or :class:`AuthError`."""
        now = self._clock()
        try:
            basic = parse_basic(authorization) if authorization and authorization.strip() else None
        except AuthError as exc:
            raise self._refused(None, BASIC, peer, exc.reason) from None
        if authorization and authorization.strip() and basic is None:
            raise self._refused(None, BASIC, peer, "unsupported authorization scheme")
        try:
            security = parse_security(soap_header)
        except TokenError as exc:
            raise self._refused(
                None,
                WSS,
                peer,
                f"invalid WS-Security header: {exc.reason}",
                must_understand=exc.must_understand,
            ) from None
        token = security.token if security is not None else None
        if basic is not None and token is not None:
            raise self._refused(
                basic.name, BASIC, peer, "both HTTP Basic and a UsernameToken were sent"
            )
        if basic is not None:
            return self._login(
                basic.name,
                BASIC,
                peer,
                now,
                lambda account: self._check_text(basic.name, basic.password, account),
            )
        if token is not None:
            assert security is not None
            return self._login_token(security, token, peer, now)
        if security is not None:
            raise self._refused(None, WSS, peer, "the Security header has no UsernameToken")
        raise self._refused(None, None, peer, NO_CREDENTIALS)

    # --- the checks -----------------------------------------------------------------------

    def _login_token(
        self, security: SecurityHeader, token: UsernameToken, peer: str | None, now: datetime
    ) -> Principal:
        try:
            check_fresh(security, self.token_policy, now)
        except TokenError as exc:
            raise self._refused(token.username, WSS, peer, exc.reason) from None
        if token.password_type == DIGEST:
            keyring = self._digest_keyring()
            if keyring is None:
                raise self._refused(
                    token.username, WSS, peer, "PasswordDigest is not available on this server"
                )

            def check(account: _Account) -> bool:
                return self._check_digest(token, account, keyring)
        else:

            def check(account: _Account) -> bool:
                return self._check_text(token.username, token.password, account)

        principal = self._login(token.username, WSS, peer, now, check)
        if token.nonce is not None and not self._remember_nonce(token, now):
            raise self._refused(token.username, WSS, peer, REPLAYED)
        return principal

    def _login(
        self,
        name: str,
        method: str,
        peer: str | None,
        now: datetime,
        check: Callable[[_Account], bool],
    ) -> Principal:
        account = self._account(name)
        if account.locked_until is not None and account.locked_until > now:
            raise self._refused(name, method, peer, LOCKED, status=403)
        if not check(account) or not account.exists:
            self._count_failure(name, peer, now)
            raise self._refused(name, method, peer, BAD_CREDENTIALS)
        if not account.enabled:
            raise self._refused(name, method, peer, DISABLED, status=403)
        if account.failure_row:
            with self.store.begin() as conn:
                conn.execute(delete(login_failures).where(login_failures.c.name == name))
        log.debug("authenticated %s by %s from %s", _shown(name), method, peer or "-")
        return Principal(name, roles_of(account.roles), method)

    def _check_text(self, name: str, password: str, account: _Account) -> bool:
        if not account.exists:
            self._verify(password, self._dummy)
            return False
        if self._cache.hit(name, password, account.password_hash):
            return True
        if self._verify(password, account.password_hash):
            self._cache.add(name, password, account.password_hash)
            return True
        return False

    def _verify(self, password: str, stored: str) -> bool:
        try:
            return verify_password(password, stored)
        except PasswordError:
            log.error("the stored password hash of a user is malformed; refusing its logins")
            return False

    def _check_digest(self, token: UsernameToken, account: _Account, keyring: Keyring) -> bool:
        if not account.exists or account.digest_secret is None:
            token.digest_matches(secrets.token_urlsafe(16))  # the same work, then no
            return False
        try:
            password = open_digest_secret(keyring, token.username, account.digest_secret)
        except (MasterKeyError, UnicodeDecodeError) as exc:
            log.error(
                "cannot read the PasswordDigest secret of %s: %s", _shown(token.username), exc
            )
            return False
        return token.digest_matches(password)

    def _digest_keyring(self) -> Keyring | None:
        if self._keyring is None:
            try:
                self._keyring = Keyring.from_env()
            except MasterKeyError as exc:
                log.error("PasswordDigest needs the master key: %s", exc)
                return None
        return self._keyring

    # --- the database ---------------------------------------------------------------------

    def _account(self, name: str) -> _Account:
        if len(name) > USER_NAME_LENGTH:
            return _Account(exists=False)
        failures = (
            select(login_failures.c.locked_until)
            .where(login_failures.c.name == name)
            .scalar_subquery()
        )
        has_failures = select(login_failures.c.name).where(login_failures.c.name == name).exists()
        with self.store.connect() as conn:
            row = conn.execute(
                select(
                    users.c.roles,
                    users.c.password_hash,
                    users.c.digest_secret,
                    users.c.enabled,
                ).where(users.c.name == name)
            ).first()
            state = conn.execute(select(has_failures.label("any"), failures.label("until"))).first()
        assert state is not None
        common: dict[str, Any] = {"failure_row": bool(state.any), "locked_until": state.until}
        if row is None:
            return _Account(exists=False, **common)
        return _Account(
            exists=True,
            roles=row.roles,
            password_hash=row.password_hash,
            digest_secret=row.digest_secret,
            enabled=bool(row.enabled),
            **common,
        )

    def _count_failure(self, name: str, peer: str | None, now: datetime) -> None:
        """One more failed login of ``name``; locks it when the policy says so."""
        if len(name) > USER_NAME_LENGTH:
            return  # cannot be a user; nothing to lock
        shown_peer = (peer or "")[:PEER_LENGTH] or None
        with self.store.begin() as conn:
            for _attempt in range(2):
                try:
                    with conn.begin_nested():
                        self._count_in(conn, name, shown_peer, now)
                    return
                except IntegrityError:
                    continue  # another process inserted the row first: update it

    def _count_in(self, conn: Connection, name: str, peer: str | None, now: datetime) -> None:
        policy = self.policy
        row = conn.execute(
            select(login_failures).where(login_failures.c.name == name).with_for_update()
        ).first()
        if row is None or row.window_start is None or row.window_start <= now - policy.window:
            failures, window_start = 1, now
        else:
            failures, window_start = row.failures + 1, row.window_start
        locked_until = row.locked_until if row is not None else None
        if policy.max_failures and failures >= policy.max_failures:
            locked_until = now + policy.lockout
            failures, window_start = 0, None
            log.warning(
                "locked %s until %s after %d failed logins (last from %s)",
                _shown(name),
                locked_until.isoformat(),
                policy.max_failures,
                _printable(peer or "-"),
            )
            audit.record(
                conn,
                who=AUDIT_WHO,
                object_type=OBJECT_TYPE,
                object_id=name,
                changes=[("locked_until", None, locked_until)],
                at=now,
                note=f"{policy.max_failures} failed logins; the last from {peer or 'unknown'}",
            )
        values = {
            "failures": failures,
            "window_start": window_start,
            "last_failure_at": now,
            "last_peer": peer,
            "locked_until": locked_until,
        }
        if row is None:
            conn.execute(insert(login_failures).values(name=name, **values))
        else:
            conn.execute(update(login_failures).where(login_failures.c.name == name).values(values))

    def _remember_nonce(self, token: UsernameToken, now: datetime) -> bool:
        """Record the token's nonce; False when it was seen before (a replay)."""
        assert token.nonce is not None
        digest = hashlib.sha256(
            token.username.encode("utf-8", "surrogatepass") + b"\0" + token.nonce
        ).hexdigest()
        expires = token.replay_until(self.token_policy, now)
        with self.store.begin() as conn:
            self._prune(conn, now)
            conn.execute(
                delete(wss_nonces).where(
                    wss_nonces.c.digest == digest, wss_nonces.c.expires_at < now
                )
            )
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(wss_nonces).values(
                            digest=digest,
                            username=token.username[:USER_NAME_LENGTH],
                            seen_at=now,
                            expires_at=expires,
                        )
                    )
            except IntegrityError:
                return False
        return True

    def _prune(self, conn: Connection, now: datetime) -> None:
        """Forget nonces that can no longer be replayed (at most every few seconds)."""
        interval = min(60.0, self.token_policy.freshness_seconds / 4)
        if time.monotonic() - self._last_prune < interval:
            return
        self._last_prune = time.monotonic()
        conn.execute(delete(wss_nonces).where(wss_nonces.c.expires_at < now))

    # --- refusals -------------------------------------------------------------------------

    def _refused(
        self,
        name: str | None,
        method: str | None,
        peer: str | None,
        reason: str,
        *,
        status: int = 401,
        must_understand: bool = False,
    ) -> AuthError:
        log.warning(
            "authentication failed: user=%s method=%s peer=%s reason=%s",
            _shown(name),
            method or "-",
            _printable(peer or "-"),
            _printable(reason),
        )
        return AuthError(reason, status, challenge=self.challenge, must_understand=must_understand)


__all__ = [
    "BAD_CREDENTIALS",
    "DISABLED",
    "LOCKED",
    "NO_CREDENTIALS",
    "REPLAYED",
    "AuthError",
    "Authenticator",
    "BasicCredentials",
    "LockoutPolicy",
    "add_user",
    "disable",
    "parse_basic",
    "set_password",
]
