"""The Authenticator on every database: HTTP Basic and UsernameToken (PasswordText and
PasswordDigest), replay and freshness, lockout and unlock, disabled users, roles, what is
logged and audited, and user management."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree
from mdm_conftest import DATABASES, open_test_store
from sqlalchemy import delete, func, select

from adapters.auth import passwords
from adapters.auth.authenticator import (
    BAD_CREDENTIALS,
    DISABLED,
    LOCKED,
    NO_CREDENTIALS,
    REPLAYED,
    Authenticator,
    AuthError,
    LockoutPolicy,
    parse_basic,
)
from adapters.auth.passwords import ScryptParams, verify_password
from adapters.auth.schema import login_failures, users, wss_nonces
from adapters.auth.users import (
    UserError,
    add_user,
    disable,
    enable,
    get_user,
    list_users,
    set_password,
    set_roles,
    unlock,
)
from adapters.auth.wssecurity import BASE64_BINARY, PASSWORD_DIGEST, PASSWORD_TEXT, WSSE, WSU
from cim.namespaces import SOAP11_ENVELOPE
from headend.access import Principal, Role, allowed
from headend.keys import ENV_MASTER_KEY, Keyring, MasterKey
from mdm.audit import entries
from mdm.database import Store, open_store
from mdm.schema import audit_log


@pytest.fixture(scope="module", params=DATABASES)
def database(request: pytest.FixtureRequest) -> Iterator[Store]:
    """One migrated database per module (SQLite, and PostgreSQL with -m services)."""
    yield from open_test_store(request.param, request)


@pytest.fixture
def store(database: Store) -> Store:
    """The module's database, emptied of users, failures, nonces and audit entries."""
    with database.begin() as conn:
        for table in (wss_nonces, login_failures, users, audit_log):
            conn.execute(delete(table))
    return database


FAST = ScryptParams(n=16, r=1, p=1)
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
KEYRING = Keyring(MasterKey.generate())
POLICY = LockoutPolicy(max_failures=3, window_seconds=60, lockout_seconds=300)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(store: Store, clock: Clock) -> Authenticator:
    add_user(store, "alice", "s3cret", ["operator"], params=FAST, who="test")
    add_user(store, "dora", "d1gest", ["reader"], digest=True, keyring=KEYRING, params=FAST)
    add_user(store, "root", "t0p", ["admin"], params=FAST)
    return Authenticator(store, POLICY, keyring=KEYRING, params=FAST, clock=clock)


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def login(auth: Authenticator, header: str | None = None, soap=None, peer="10.0.0.9") -> Principal:
    return auth.authenticate(authorization=header, soap_header=soap, peer=peer)


def refused(auth: Authenticator, header: str | None = None, soap=None) -> AuthError:
    with pytest.raises(AuthError) as caught:
        login(auth, header, soap)
    return caught.value


def created_text(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def soap_header(
    name: str,
    password: str,
    *,
    kind: str = PASSWORD_TEXT,
    nonce: bytes | None = None,
    created: datetime | None = None,
    digest_of: str | None = None,
) -> etree._Element:
    """A SOAP Header with a UsernameToken; with ``digest_of`` the Password is the digest of
    that password, computed here independently of the code under test."""
    created_s = created_text(created) if created is not None else None
    if digest_of is not None:
        assert nonce is not None and created_s is not None
        raw = hashlib.sha1(nonce + created_s.encode() + digest_of.encode()).digest()
        password, kind = base64.b64encode(raw).decode(), PASSWORD_DIGEST
    header = etree.Element(f"{{{SOAP11_ENVELOPE}}}Header")
    security = etree.SubElement(header, f"{{{WSSE}}}Security")
    token = etree.SubElement(security, f"{{{WSSE}}}UsernameToken")
    etree.SubElement(token, f"{{{WSSE}}}Username").text = name
    etree.SubElement(token, f"{{{WSSE}}}Password", Type=kind).text = password
    if nonce is not None:
        element = etree.SubElement(token, f"{{{WSSE}}}Nonce", EncodingType=BASE64_BINARY)
        element.text = base64.b64encode(nonce).decode()
    if created_s is not None:
        etree.SubElement(token, f"{{{WSU}}}Created").text = created_s
    return header


# --- HTTP Basic ----------------------------------------------------------------------------


def test_good_basic(auth: Authenticator) -> None:
    principal = login(auth, basic("alice", "s3cret"))
    assert principal == Principal("alice", frozenset({Role.OPERATOR}), "basic")
    # the cached check answers the same
    assert login(auth, basic("alice", "s3cret")) == principal


def test_bad_basic_and_unknown_user_get_the_same_answer(auth: Authenticator) -> None:
    wrong = refused(auth, basic("alice", "guess"))
    unknown = refused(auth, basic("nobody", "guess"))
    assert (
        (wrong.reason, wrong.status) == (unknown.reason, unknown.status) == (BAD_CREDENTIALS, 401)
    )
    assert wrong.challenge == unknown.challenge == 'Basic realm="OpenHES", charset="UTF-8"'


def test_unknown_users_cost_one_hash_of_the_same_parameters(
    auth: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[passwords.ScryptParams] = []
    real = passwords._scrypt

    def counting(raw, salt, params, length):
        calls.append(params)
        return real(raw, salt, params, length)

    monkeypatch.setattr(passwords, "_scrypt", counting)
    refused(auth, basic("alice", "guess"))
    known = list(calls)
    calls.clear()
    refused(auth, basic("nobody", "guess"))
    assert calls == known == [FAST]


MALFORMED_BASIC = [
    "Basic !!!",
    "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b":password-only").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
    "Basic",
    "Basic " + "A" * 5000,
]


def test_malformed_basic(auth: Authenticator) -> None:
    for header in MALFORMED_BASIC:
        error = refused(auth, header)
        assert error.status == 401 and "malformed" in error.reason, header


def test_other_schemes_and_no_credentials(auth: Authenticator) -> None:
    assert refused(auth, "Bearer abc.def").reason == "unsupported authorization scheme"
    assert refused(auth, None).reason == NO_CREDENTIALS
    assert refused(auth, "   ").reason == NO_CREDENTIALS


def test_basic_passwords_may_hold_colons_and_unicode(store: Store, auth: Authenticator) -> None:
    add_user(store, "émile", "a:b:ç", ["reader"], params=FAST)
    assert login(auth, basic("émile", "a:b:ç")).name == "émile"
    assert parse_basic("basic " + base64.b64encode(b"x:y").decode()).password == "y"


def test_a_very_long_name_is_unknown_and_not_recorded(store: Store, auth: Authenticator) -> None:
    assert refused(auth, basic("x" * 500, "pw")).reason == BAD_CREDENTIALS
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(login_failures)).scalar() == 0


# --- UsernameToken --------------------------------------------------------------------------


def test_good_and_bad_password_text(auth: Authenticator, clock: Clock) -> None:
    principal = login(auth, soap=soap_header("alice", "s3cret", created=clock.now))
    assert principal == Principal("alice", frozenset({Role.OPERATOR}), "wss")
    assert login(auth, soap=soap_header("alice", "s3cret")).name == "alice"  # no Created
    assert refused(auth, soap=soap_header("alice", "wrong")).reason == BAD_CREDENTIALS
    assert refused(auth, soap=soap_header("ghost", "wrong")).reason == BAD_CREDENTIALS


def test_good_and_bad_password_digest(auth: Authenticator, clock: Clock) -> None:
    good = soap_header("dora", "", nonce=b"n-1" * 6, created=clock.now, digest_of="d1gest")
    assert login(auth, soap=good) == Principal("dora", frozenset({Role.READER}), "wss")
    bad = soap_header("dora", "", nonce=b"n-2" * 6, created=clock.now, digest_of="D1gest")
    assert refused(auth, soap=bad).reason == BAD_CREDENTIALS


def test_digest_needs_a_user_allowed_to_use_it(auth: Authenticator, clock: Clock) -> None:
    # alice has no digest secret: even her right password in a digest is refused.
    header = soap_header("alice", "", nonce=b"n-3" * 6, created=clock.now, digest_of="s3cret")
    assert refused(auth, soap=header).reason == BAD_CREDENTIALS
    header = soap_header("ghost", "", nonce=b"n-4" * 6, created=clock.now, digest_of="s3cret")
    assert refused(auth, soap=header).reason == BAD_CREDENTIALS
    # ... while PasswordText works for digest users too.
    assert login(auth, soap=soap_header("dora", "d1gest")).name == "dora"


def test_digest_without_a_master_key(
    store: Store, auth: Authenticator, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_MASTER_KEY, raising=False)
    no_key = Authenticator(store, POLICY, params=FAST, clock=clock)
    header = soap_header("dora", "", nonce=b"n-5" * 6, created=clock.now, digest_of="d1gest")
    error = refused(no_key, soap=header)
    assert error.status == 401 and "not available" in error.reason
    # the wrong master key: the secret does not decrypt, the login fails like a bad password
    other = Authenticator(
        store, POLICY, keyring=Keyring(MasterKey.generate()), params=FAST, clock=clock
    )
    assert refused(other, soap=header).reason == BAD_CREDENTIALS


def test_a_replayed_nonce_is_refused(store: Store, auth: Authenticator, clock: Clock) -> None:
    header = soap_header("dora", "", nonce=b"once" * 4, created=clock.now, digest_of="d1gest")
    assert login(auth, soap=header).name == "dora"
    clock.advance(10)
    error = refused(auth, soap=header)
    assert (error.reason, error.status) == (REPLAYED, 401)
    # also with PasswordText
    text = soap_header("alice", "s3cret", nonce=b"twice" * 4, created=clock.now)
    login(auth, soap=text)
    assert refused(auth, soap=text).reason == REPLAYED
    # a replay is not a failed password: no lockout counted against the user
    assert get_user(store, "dora").failures == 0


def test_the_same_nonce_of_another_user_is_not_a_replay(auth: Authenticator, clock: Clock) -> None:
    nonce = b"shared-nonce-123"
    login(auth, soap=soap_header("alice", "s3cret", nonce=nonce, created=clock.now))
    login(auth, soap=soap_header("root", "t0p", nonce=nonce, created=clock.now))


def test_nonces_are_forgotten_after_the_window(
    store: Store, auth: Authenticator, clock: Clock
) -> None:
    nonce = b"reusable-nonce!!"
    login(auth, soap=soap_header("alice", "s3cret", nonce=nonce, created=clock.now))
    clock.advance(auth.token_policy.freshness_seconds + auth.token_policy.clock_skew_seconds + 1)
    # a new token that happens to carry the same nonce, long after: accepted
    login(auth, soap=soap_header("alice", "s3cret", nonce=nonce, created=clock.now))
    auth._last_prune = float("-inf")
    clock.advance(3600)
    login(auth, soap=soap_header("alice", "s3cret", nonce=b"another-nonce-1", created=clock.now))
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(wss_nonces)).scalar() == 1


def test_stale_and_future_created(store: Store, auth: Authenticator, clock: Clock) -> None:
    stale = soap_header("alice", "s3cret", nonce=b"s" * 16, created=clock.now - timedelta(hours=1))
    assert "freshness window" in refused(auth, soap=stale).reason
    future = soap_header(
        "alice", "s3cret", nonce=b"f" * 16, created=clock.now + timedelta(minutes=5)
    )
    assert "in the future" in refused(auth, soap=future).reason
    skewed = soap_header(
        "alice", "s3cret", nonce=b"k" * 16, created=clock.now + timedelta(seconds=20)
    )
    assert login(auth, soap=skewed).name == "alice"
    assert get_user(store, "alice").failures == 0  # not password failures


def test_malformed_security_headers(auth: Authenticator) -> None:
    header = soap_header("alice", "s3cret")
    header[0][0].remove(header[0][0][0])  # no Username
    error = refused(auth, soap=header)
    assert error.status == 401 and "no Username" in error.reason
    empty = etree.Element(f"{{{SOAP11_ENVELOPE}}}Header")
    etree.SubElement(empty, f"{{{WSSE}}}Security")
    assert "no UsernameToken" in refused(auth, soap=empty).reason
    signed = soap_header("alice", "s3cret")
    signed[0].set(f"{{{SOAP11_ENVELOPE}}}mustUnderstand", "1")
    etree.SubElement(signed[0], "{http://www.w3.org/2000/09/xmldsig#}Signature")
    error = refused(auth, soap=signed)
    assert error.must_understand and "mustUnderstand" in error.reason


def test_basic_and_a_token_together_are_refused(auth: Authenticator) -> None:
    error = refused(auth, basic("alice", "s3cret"), soap_header("alice", "s3cret"))
    assert error.status == 401 and "both" in error.reason


# --- lockout --------------------------------------------------------------------------------


def test_lockout_and_its_end(store: Store, auth: Authenticator, clock: Clock) -> None:
    for _ in range(POLICY.max_failures):
        assert refused(auth, basic("alice", "guess")).reason == BAD_CREDENTIALS
        clock.advance(1)
    error = refused(auth, basic("alice", "s3cret"))  # even the right password
    assert (error.reason, error.status, error.challenge) == (LOCKED, 403, None)
    assert get_user(store, "alice").locked(clock.now)
    clock.advance(POLICY.lockout_seconds + 1)
    assert login(auth, basic("alice", "s3cret")).name == "alice"
    assert get_user(store, "alice").failures == 0
    assert get_user(store, "alice").locked_until is None  # the success cleared the row
    locks = [
        e
        for e in entries(store, object_type="user", object_id="alice")
        if e.attribute == "locked_until"
    ]
    assert len(locks) == 1 and locks[0].who == "openhes-auth" and "10.0.0.9" in locks[0].note


def test_failures_outside_the_window_do_not_add_up(auth: Authenticator, clock: Clock) -> None:
    for _ in range(5):
        refused(auth, basic("alice", "guess"))
        refused(auth, basic("alice", "guess"))
        clock.advance(POLICY.window_seconds + 1)
    assert login(auth, basic("alice", "s3cret")).name == "alice"


def test_a_success_resets_the_count(auth: Authenticator, clock: Clock) -> None:
    for _ in range(3):
        refused(auth, basic("alice", "guess"))
        refused(auth, basic("alice", "guess"))
        login(auth, basic("alice", "s3cret"))


def test_unknown_names_are_locked_the_same_way(auth: Authenticator) -> None:
    for name in ("alice", "nobody"):
        for _ in range(POLICY.max_failures):
            refused(auth, basic(name, "guess"))
    assert refused(auth, basic("alice", "x")).reason == refused(auth, basic("nobody", "x")).reason
    assert refused(auth, basic("nobody", "x")).status == 403


def test_lockout_applies_to_tokens_too(auth: Authenticator, clock: Clock) -> None:
    for _ in range(POLICY.max_failures):
        refused(auth, soap=soap_header("alice", "guess"))
    assert refused(auth, basic("alice", "s3cret")).reason == LOCKED
    assert refused(auth, soap=soap_header("alice", "s3cret")).reason == LOCKED


def test_unlock(store: Store, auth: Authenticator) -> None:
    for _ in range(POLICY.max_failures):
        refused(auth, basic("alice", "guess"))
    assert refused(auth, basic("alice", "s3cret")).reason == LOCKED
    assert unlock(store, "alice", who="admin")
    assert not unlock(store, "alice", who="admin")
    assert login(auth, basic("alice", "s3cret")).name == "alice"
    audit = entries(store, object_type="user", object_id="alice")
    assert audit[-1].who == "admin" and audit[-1].attribute == "locked_until"


def test_lockout_can_be_turned_off(store: Store, clock: Clock) -> None:
    add_user(store, "alice", "s3cret", ["reader"], params=FAST)
    auth = Authenticator(store, LockoutPolicy(max_failures=0), params=FAST, clock=clock)
    for _ in range(10):
        refused(auth, basic("alice", "guess"))
    assert login(auth, basic("alice", "s3cret")).name == "alice"


def test_lockout_policy_is_checked() -> None:
    with pytest.raises(ValueError):
        LockoutPolicy(max_failures=-1)
    with pytest.raises(ValueError):
        LockoutPolicy(window_seconds=0)


# --- users, roles, disabled -----------------------------------------------------------------


def test_disabled_user(store: Store, auth: Authenticator) -> None:
    assert disable(store, "alice", who="admin")
    assert not disable(store, "alice", who="admin")
    error = refused(auth, basic("alice", "s3cret"))
    assert (error.reason, error.status) == (DISABLED, 403)
    # a wrong password tells nothing about the account
    assert refused(auth, basic("alice", "guess")).reason == BAD_CREDENTIALS
    assert enable(store, "alice", who="admin")
    assert login(auth, basic("alice", "s3cret")).name == "alice"


def test_roles_reach_the_principal(store: Store, auth: Authenticator) -> None:
    reader = login(auth, basic("dora", "d1gest"))
    operator = login(auth, basic("alice", "s3cret"))
    admin = login(auth, basic("root", "t0p"))
    assert allowed(reader, "get", "MeterReadings")
    assert not allowed(reader, "create", "EndDeviceControls")
    assert allowed(operator, "create", "EndDeviceControls")
    assert not allowed(operator, "create", "MeterReadSchedule")
    assert allowed(admin, "create", "MeterReadSchedule")
    assert set_roles(store, "dora", ["operator", "reader"], who="admin")
    assert login(auth, basic("dora", "d1gest")).roles == {Role.OPERATOR, Role.READER}


def test_a_new_password_invalidates_the_cached_one(store: Store, auth: Authenticator) -> None:
    login(auth, basic("alice", "s3cret"))
    set_password(store, "alice", "n3w", who="alice", params=FAST)
    assert refused(auth, basic("alice", "s3cret")).reason == BAD_CREDENTIALS
    assert login(auth, basic("alice", "n3w")).name == "alice"


def test_set_password_keeps_or_changes_the_digest_permission(
    store: Store, auth: Authenticator, clock: Clock
) -> None:
    set_password(store, "dora", "n3w", keyring=KEYRING, params=FAST)
    assert get_user(store, "dora").digest
    header = soap_header("dora", "", nonce=b"after-change", created=clock.now, digest_of="n3w")
    assert login(auth, soap=header).name == "dora"
    set_password(store, "dora", "n3w", digest=False, params=FAST)
    assert not get_user(store, "dora").digest
    with store.connect() as conn:
        assert (
            conn.execute(select(users.c.digest_secret).where(users.c.name == "dora")).scalar()
            is None
        )


def test_failures_are_logged_without_the_password(
    auth: Authenticator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="openhes.auth")
    refused(auth, basic("alice", "Sup3rSecretGuess"))
    refused(auth, basic("no\nbody", "Sup3rSecretGuess"))
    refused(auth, soap=soap_header("alice", "Sup3rSecretGuess"))
    refused(auth, "Basic " + base64.b64encode(b"Sup3rSecretGuess").decode())
    for _ in range(POLICY.max_failures):
        refused(auth, basic("root", "Sup3rSecretGuess"))
    with pytest.raises(AuthError):
        login(auth, basic("dora", "x"), peer="10.0.0.1\nforged line")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("authentication failed" in m for m in messages) >= 7
    assert all("Sup3rSecretGuess" not in m for m in messages)
    assert all("\n" not in m for m in messages)  # names are escaped
    assert any("user='alice'" in m and "peer=10.0.0.9" in m for m in messages)
    assert any("locked 'root'" in m for m in messages)


def test_user_management_is_checked_and_audited(store: Store) -> None:
    add_user(store, "ops", "pw", ["operator"], params=FAST, who="admin")
    with pytest.raises(UserError, match="already exists"):
        add_user(store, "ops", "pw", ["operator"], params=FAST)
    for name in ("", " lead", "a:b", "tab\there", "x" * 65):
        with pytest.raises(UserError):
            add_user(store, name, "pw", ["reader"], params=FAST)
    with pytest.raises(UserError, match="unknown role"):
        add_user(store, "x", "pw", ["superuser"], params=FAST)
    with pytest.raises(UserError, match="at least one role"):
        add_user(store, "x", "pw", [], params=FAST)
    for change in (disable, enable, unlock):
        if change is not unlock:
            with pytest.raises(UserError, match="no user"):
                change(store, "ghost")
    with pytest.raises(UserError, match="no user"):
        set_password(store, "ghost", "pw", params=FAST)
    assert [u.name for u in list_users(store)] == ["ops"]
    with store.connect() as conn:
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
    assert verify_password("pw", stored) and "pw" not in stored.split("$")
    log = entries(store, object_type="user", object_id="ops")
    assert log[0].who == "admin" and log[0].attribute == "(created)"
    set_password(store, "ops", "secret-two", who="admin", params=FAST)
    assert all("secret-two" not in (e.new_value or "") for e in entries(store))


def test_user_view(store: Store, auth: Authenticator, clock: Clock) -> None:
    refused(auth, basic("alice", "guess"))
    alice = get_user(store, "alice")
    assert alice is not None and alice.failures == 1 and not alice.locked(clock.now)
    assert get_user(store, "nobody") is None
    by_name = {u.name: u for u in list_users(store)}
    assert by_name["dora"].digest and not by_name["alice"].digest
    assert by_name["root"].roles == {Role.ADMIN}


# --- concurrency ----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite-file", pytest.param("postgresql", marks=pytest.mark.services)])
def shared_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    """A database several threads may use at once (an in-memory SQLite has one connection)."""
    if request.param == "sqlite-file":
        db = open_store(str(tmp_path / "auth.sqlite3"))
        try:
            yield db
        finally:
            db.close()
    else:
        yield from open_test_store("postgresql", request)


def test_concurrent_replays_let_exactly_one_through(shared_store: Store, clock: Clock) -> None:
    add_user(shared_store, "alice", "s3cret", ["reader"], params=FAST)
    auth = Authenticator(shared_store, POLICY, params=FAST, clock=clock)
    header = soap_header("alice", "s3cret", nonce=b"race-nonce-00001", created=clock.now)

    def attempt(_: int) -> str:
        try:
            return login(auth, soap=header).name
        except AuthError as error:
            return error.reason

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(attempt, range(12)))
    assert outcomes.count("alice") == 1
    assert outcomes.count(REPLAYED) == 11


def test_concurrent_failures_are_all_counted(shared_store: Store, clock: Clock) -> None:
    add_user(shared_store, "alice", "s3cret", ["reader"], params=FAST)
    policy = LockoutPolicy(max_failures=8, window_seconds=60, lockout_seconds=60)
    auth = Authenticator(shared_store, policy, params=FAST, clock=clock)

    def attempt(_: int) -> str:
        try:
            return login(auth, basic("alice", "guess")).name
        except AuthError as error:
            return error.reason

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(attempt, range(policy.max_failures - 1)))
    assert outcomes == [BAD_CREDENTIALS] * (policy.max_failures - 1)
    assert get_user(shared_store, "alice").failures == policy.max_failures - 1
    refused(auth, basic("alice", "guess"))
    assert refused(auth, basic("alice", "s3cret")).reason == LOCKED
