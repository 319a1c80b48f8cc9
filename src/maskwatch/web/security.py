"""Admin authentication, sessions, CSRF tokens and login rate limiting.

No HTTP here: the routes in :mod:`maskwatch.web.auth` call these.

- The admin password is stored only as a salted scrypt hash in ``admin.json`` in the
  data folder (mode 0600). It comes from ``MASKWATCH_ADMIN_PASSWORD`` or, at first
  start, is generated and returned once so the server can print it.
- A session is a random id; the cookie carries the id and an HMAC of it under a key
  kept in ``web-secret`` (0600). Live sessions are also kept in ``sessions.json``
  (0600; SHA-256 digests of the ids, never the ids), so a restart logs nobody out,
  while a logout or an expiry holds across restarts. Setting a new admin password
  ends every session.
- CSRF: every browser gets a random ``seed`` cookie; the token put into forms and
  ``X-CSRF-Token`` headers is HMAC(key, seed). A cross-site page can neither read the
  cookie nor compute the token (signed double-submit).
- API clients send ``Authorization: Bearer <admin password>`` and need no CSRF token.
- One lockout for every way of presenting the password (the login form, Bearer on a
  route or on the WebSocket): failures from one client address count together, and past
  ``attempts`` failures within ``window_s`` every check from that address is refused
  (:class:`LockedOut`), the right password included, until the window passes. A session
  cookie is not the password and keeps working. Checks run scrypt on a small pool of
  their own (:meth:`AdminAuth.verify_secret_async`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ADMIN_FILE = "admin.json"
SECRET_FILE = "web-secret"
SESSIONS_FILE = "sessions.json"
#: scrypt cost parameters (about 50 ms per check on a 2-core CPU, 16 MB of memory).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: Password checks run at once, at most (each ~50 ms of CPU, 16 MB): a flood of guesses
#: queues here instead of filling the event loop or the default thread pool.
SCRYPT_WORKERS = 2
_scrypt_pool: ThreadPoolExecutor | None = None
_scrypt_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The process's pool for password checks (made at first use, shared by every app)."""
    global _scrypt_pool
    with _scrypt_pool_lock:
        if _scrypt_pool is None:
            _scrypt_pool = ThreadPoolExecutor(SCRYPT_WORKERS, thread_name_prefix="maskwatch-scrypt")
        return _scrypt_pool


class LockedOut(Exception):
    """Too many failed attempts from one client address; ``retry_after`` in seconds
    (a whole number, at least 1, as the HTTP header wants it)."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = int(retry_after) + 1
        super().__init__(f"too many failed attempts from your address: every way of logging in is "
                         f"locked for {self.retry_after} s more, even with the right password")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> dict[str, object]:
    """A JSON-ready record of a salted scrypt hash of ``password``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    return {"algorithm": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
            "salt": _b64(salt), "hash": _b64(digest)}


def verify_password(password: str, record: dict[str, object]) -> bool:
    """True when ``password`` matches a record made by :func:`hash_password`."""
    try:
        salt = _unb64(str(record["salt"]))
        want = _unb64(str(record["hash"]))
        got = hashlib.scrypt(password.encode(), salt=salt, n=int(record["n"]), r=int(record["r"]),
                             p=int(record["p"]), dklen=len(want))
    except (KeyError, ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass
class Session:
    """One login: ``sid`` is the SHA-256 digest of the id its cookie carries."""

    sid: str
    created: float
    expires: float


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class AdminAuth:
    """The admin credential, sessions and CSRF tokens of one server.

    Args:
        home: data folder holding ``admin.json`` and ``web-secret``.
        password: set (or replace) the admin password; None keeps the stored one or,
            when none is stored, generates one (see :attr:`generated_password`).
        session_s: lifetime of a login, seconds.
        attempts, window_s: failed password checks allowed per client address within
            ``window_s`` seconds, the form and Bearer tokens counted together.
    """

    def __init__(self, home: Path, password: str | None = None, *, session_s: float = 12 * 3600,
                 attempts: int = 5, window_s: float = 300.0) -> None:
        self.home = Path(home)
        self.session_s = float(session_s)
        self.attempts, self.window_s = int(attempts), float(window_s)
        self.generated_password: str | None = None
        admin = self.home / ADMIN_FILE
        record = None
        if admin.is_file():
            try:
                record = json.loads(admin.read_text())
            except (OSError, ValueError) as exc:
                raise RuntimeError(f"{admin}: unreadable ({exc}); delete it to set a new admin "
                                   "password") from exc
        new_password = False
        if password is not None:
            if record is None or not verify_password(password, record):
                record = hash_password(password)
                _write_private(admin, json.dumps(record))
                new_password = True
        elif record is None:
            self.generated_password = secrets.token_urlsafe(15)
            record = hash_password(self.generated_password)
            _write_private(admin, json.dumps(record))
            new_password = True
        self._record = record
        secret_file = self.home / SECRET_FILE
        if secret_file.is_file() and len(secret_file.read_bytes()) >= 32:
            self._key = secret_file.read_bytes()
        else:
            self._key = secrets.token_bytes(32)
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self._key)
        self._lock = threading.Lock()
        # Live sessions by the SHA-256 digest of their id (as stored in sessions.json).
        self._sessions: dict[str, Session] = {} if new_password else self._load_sessions()
        if new_password:
            self._save_sessions()
        self._failures: dict[str, deque[float]] = {}
        self._good_tokens: set[bytes] = set()  # sha256 of bearer tokens already verified

    # -- password and bearer tokens ------------------------------------------------

    def check_password(self, password: str) -> bool:
        """True for the admin password (slow on purpose: scrypt)."""
        return verify_password(password, self._record)

    def known_secret(self, secret: str) -> bool:
        """True when ``secret`` is the admin password as already verified (the cache of
        good tokens, by SHA-256 digest, so API clients pay scrypt once): cheap, runs no
        scrypt, so sync code on the event loop may call it. No lockout here."""
        digest = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            return digest in self._good_tokens

    def _remember(self, secret: str) -> None:
        with self._lock:
            self._good_tokens = {hashlib.sha256(secret.encode()).digest()}

    def verify_secret(self, secret: str, client: str) -> bool:
        """Check the admin password presented by ``client`` (form, Bearer, WebSocket),
        under the one lockout: blocking (scrypt), for a worker thread.

        Raises:
            LockedOut: ``client`` has used up its attempts; the password is not checked.
        """
        self._start_attempt(client)  # counted as failed until it succeeds
        if self.known_secret(secret) or self.check_password(secret):
            self._remember(secret)
            self.clear_failures(client)
            return True
        return False

    async def verify_secret_async(self, secret: str, client: str) -> bool:
        """:meth:`verify_secret` from async code: a locked-out address or a cached good
        token is answered at once; scrypt runs on a pool of :data:`SCRYPT_WORKERS`
        threads, off the event loop. Raises :class:`LockedOut`."""
        wait = self.retry_after(client)
        if wait > 0:
            raise LockedOut(wait)
        if self.known_secret(secret):
            return True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_pool(), self.verify_secret, secret, client)

    # -- rate limiting --------------------------------------------------------------

    def _recent_failures(self, client: str, now: float) -> deque[float] | None:
        """The failures of ``client`` within the window (call with the lock held)."""
        fails = self._failures.get(client)
        while fails and fails[0] <= now - self.window_s:
            fails.popleft()
        return fails

    def retry_after(self, client: str) -> float:
        """Seconds before ``client`` may try to log in again (0 = now)."""
        now = time.monotonic()
        with self._lock:
            fails = self._recent_failures(client, now)
            if not fails or len(fails) < self.attempts:
                return 0.0
            return max(fails[0] + self.window_s - now, 1e-3)

    def _start_attempt(self, client: str) -> None:
        """Count an attempt of ``client`` as a failure before its check runs, so that
        guesses made at once cannot pass the limit; raises :class:`LockedOut` when the
        limit is reached."""
        now = time.monotonic()
        with self._lock:
            fails = self._recent_failures(client, now)
            if fails is not None and len(fails) >= self.attempts:
                raise LockedOut(max(fails[0] + self.window_s - now, 0.0))
            self._add_failure(client, now)

    def _add_failure(self, client: str, now: float) -> None:
        if len(self._failures) > 10_000:  # bounded memory under a flood of addresses
            self._failures.clear()
        self._failures.setdefault(client, deque(maxlen=self.attempts)).append(now)

    def clear_failures(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    # -- sessions ---------------------------------------------------------------

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())

    def _load_sessions(self) -> dict[str, Session]:
        path = self.home / SESSIONS_FILE
        if not path.is_file():
            return {}
        now = time.time()
        try:
            rows = json.loads(path.read_text())
            return {str(r["sid"]): Session(str(r["sid"]), float(r["created"]), float(r["expires"]))
                    for r in rows if float(r["expires"]) > now}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s: unreadable (%s); every session ends, log in again", path, exc)
            return {}

    def _save_sessions(self) -> None:
        """Write the live sessions (call with the lock held); a failure is logged, the
        sessions stay valid in memory."""
        rows = [{"sid": k, "created": s.created, "expires": s.expires}
                for k, s in self._sessions.items()]
        try:
            _write_private(self.home / SESSIONS_FILE, json.dumps(rows))
        except OSError as exc:
            log.warning("could not save the sessions (%s): a restart will log everyone out", exc)

    def new_session(self) -> str:
        """A new login; returns the cookie value."""
        now = time.time()
        sid = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            self._sessions[_digest(sid)] = Session(_digest(sid), now, now + self.session_s)
            self._save_sessions()
        return f"{sid}.{self._sign('session:' + sid)}"

    def session_from_cookie(self, value: str | None) -> Session | None:
        """The live session a cookie names, or None (bad signature, unknown, expired)."""
        if not value or "." not in value:
            return None
        sid, sig = value.rsplit(".", 1)
        if not hmac.compare_digest(sig, self._sign("session:" + sid)):
            return None
        key = _digest(sid)
        with self._lock:
            s = self._sessions.get(key)
            if s is None or s.expires <= time.time():
                if self._sessions.pop(key, None) is not None:
                    self._save_sessions()
                return None
            return s

    def end_session(self, value: str | None) -> None:
        s = self.session_from_cookie(value)
        if s is not None:
            with self._lock:
                self._sessions.pop(s.sid, None)
                self._save_sessions()

    # -- CSRF -------------------------------------------------------------------

    @staticmethod
    def new_csrf_seed() -> str:
        return secrets.token_urlsafe(24)

    def csrf_token(self, seed: str) -> str:
        """The token forms and fetch() calls send, bound to the browser's seed cookie."""
        return self._sign("csrf:" + seed)

    def check_csrf(self, seed: str | None, token: str | None) -> bool:
        if not seed or not token:
            return False
        return hmac.compare_digest(self.csrf_token(seed), token)
