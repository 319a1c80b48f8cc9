"""Admin sessions across restarts (AdminAuth on a real data folder)."""

from __future__ import annotations

import json
import logging
import stat
import time

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
    assert AdminAuth(tmp_path, PW).session_from_cookie(cookie) is None  # changing back revives nothing


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
