"""Admin sessions across restarts (AdminAuth on a real data folder)."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import statistics
import threading
import time

import pytest

from maskwatch.web.security import SESSIONS_FILE, AdminAuth

PW = "correct horse battery staple"


def test_a_login_survives_a_restart_and_a_logout_too(tmp_path):
    cookie = AdminAuth(tmp_path, PW).new_session()
    restarted = AdminAuth(tmp_path, PW)
    assert restarted.session_from_cookie(cookie) is not None
    restarted.end_session(cookie)
    assert AdminAuth(tmp_path, PW).session_from_cookie(cookie) is None


def test_the_sessions_file_is_private_and_holds_no_session_id(tmp_path):
    cookie = AdminAuth(tmp_path, PW).new_session()
    path = tmp_path / SESSIONS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sid = cookie.rsplit(".", 1)[0]
    assert sid not in path.read_text() and len(json.loads(path.read_text())) == 1


def test_a_new_admin_password_ends_every_session(tmp_path):
    cookie = AdminAuth(tmp_path, PW).new_session()
    assert AdminAuth(tmp_path, "a new password").session_from_cookie(cookie) is None
    # changing back revives nothing
    assert AdminAuth(tmp_path, PW).session_from_cookie(cookie) is None


def test_an_expired_session_is_gone_after_a_restart(tmp_path):
    auth = AdminAuth(tmp_path, PW, session_s=0.2)
    old, live = auth.new_session(), None
    time.sleep(0.3)
    live = auth.new_session()  # a new login also drops the expired ones from the file
    assert len(json.loads((tmp_path / SESSIONS_FILE).read_text())) == 1
    restarted = AdminAuth(tmp_path, PW, session_s=0.2)
    assert restarted.session_from_cookie(old) is None
    assert restarted.session_from_cookie(live) is not None


def test_a_cookie_signed_by_another_server_is_refused(tmp_path):
    other = AdminAuth(tmp_path / "other", PW).new_session()
    assert AdminAuth(tmp_path, PW).session_from_cookie(other) is None


def test_an_unreadable_sessions_file_logs_everyone_out_and_says_so(tmp_path, caplog):
    cookie = AdminAuth(tmp_path, PW).new_session()
    (tmp_path / SESSIONS_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        auth = AdminAuth(tmp_path, PW)
    assert auth.session_from_cookie(cookie) is None
    assert "unreadable" in caplog.text
    assert auth.session_from_cookie(auth.new_session()) is not None  # and logging in works again


# -- one lockout for every way of presenting the password -----------------------------------


def test_failures_lock_the_address_even_for_the_right_password(tmp_path):
    from maskwatch.web.security import LockedOut

    auth = AdminAuth(tmp_path, PW, attempts=3, window_s=60)
    for _ in range(3):
        assert auth.verify_secret("wrong", "10.0.0.1") is False
    with pytest.raises(LockedOut) as locked:
        auth.verify_secret(PW, "10.0.0.1")
    assert (1 <= locked.value.retry_after <= 61
            and "even with the right password" in str(locked.value))
    assert auth.verify_secret(PW, "10.0.0.2") is True  # another address
    # the right password, once verified, is cached, but the cache does not pass a lockout
    assert auth.known_secret(PW)
    with pytest.raises(LockedOut):
        asyncio.run(auth.verify_secret_async(PW, "10.0.0.1"))


def test_the_lockout_ends_with_its_window_and_a_success_clears_it(tmp_path):
    auth = AdminAuth(tmp_path, PW, attempts=2, window_s=0.5)
    assert not auth.verify_secret("wrong", "a") and not auth.verify_secret("wrong", "a")
    assert auth.retry_after("a") > 0
    time.sleep(0.6)
    assert auth.retry_after("a") == 0 and auth.verify_secret(PW, "a")
    assert not auth.verify_secret("wrong", "a")  # the success cleared the older failures
    assert auth.retry_after("a") == 0


def test_guesses_made_at_once_cannot_pass_the_limit(tmp_path):
    """Each attempt counts as failed before its (slow) check, so 10 concurrent wrong
    guesses from one address get exactly ``attempts`` checks."""
    from maskwatch.web.security import LockedOut

    auth = AdminAuth(tmp_path, PW, attempts=3, window_s=60)

    async def flood() -> list[object]:
        return await asyncio.gather(*(auth.verify_secret_async(f"guess {i}", "a")
                                      for i in range(10)),
                                    return_exceptions=True)

    results = asyncio.run(flood())
    assert results.count(False) == 3
    assert sum(isinstance(r, LockedOut) for r in results) == 7


def test_password_checks_run_off_the_event_loop_on_a_small_pool(tmp_path):
    """Wrong passwords from 6 addresses at once: the event loop keeps ticking every few
    ms while scrypt (~50 ms each) runs, on the checks' own pool of SCRYPT_WORKERS threads,
    not the default executor."""
    from maskwatch.web.security import SCRYPT_WORKERS

    auth = AdminAuth(tmp_path, PW)
    gaps: list[float] = []

    async def main() -> list[bool]:
        checks = asyncio.gather(*(auth.verify_secret_async("wrong", f"10.0.0.{i}")
                                  for i in range(6)))
        last = time.perf_counter()
        while not checks.done():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        assert asyncio.get_running_loop()._default_executor is None  # noqa: SLF001 - never made
        return await checks

    t0 = time.perf_counter()
    assert asyncio.run(main()) == [False] * 6
    elapsed = time.perf_counter() - t0
    assert statistics.median(gaps) < 0.025, (statistics.median(gaps), elapsed)
    assert len(gaps) > 10
    pool = [t for t in threading.enumerate() if t.name.startswith("maskwatch-scrypt")]
    assert 1 <= len(pool) <= SCRYPT_WORKERS
