"""The guards in front of the app (:mod:`maskwatch.web.guards`) and the one lockout for
every way of presenting the admin password.

The defects of issue 15 are shown against a real server (``maskwatch serve`` under
uvicorn on 127.0.0.1, private, also answering to ``camera.lan``); the client's address is
chosen by binding its socket to another loopback address (127.0.0.2, ...), since the
server trusts no X-Forwarded-For. The route table and the open routes use the TestClient.
"""

from __future__ import annotations

import io
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image
from tests.web.browser import Server, running_server
from tests.web.conftest import BEARER, PASSWORD

from maskwatch.web import WebSettings

#: Failed attempts before the lockout on a server started by ``maskwatch serve``.
ATTEMPTS = WebSettings().login_attempts


def png_bytes(w: int = 64, h: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (120, 130, 140)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A private real server that also answers to the name ``camera.lan``."""
    home = tmp_path_factory.mktemp("guards") / "home"
    home.mkdir()
    with running_server(home, PASSWORD, "-q", "--private", "--allowed-host", "camera.lan") as srv:
        yield srv


def port_of(srv: Server) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def client_at(srv: Server, address: str = "127.0.0.1") -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (a loopback address)."""
    return httpx.Client(base_url=srv.url, timeout=30.0,
                        transport=httpx.HTTPTransport(local_address=address))


def form_login(c: httpx.Client, password: str) -> httpx.Response:
    """Log in through the login page's form, as a browser does."""
    m = re.search(r'name="csrf-token" content="([^"]+)"', c.get("/login").text)
    assert m, "login page without a CSRF token"
    return c.post("/login", data={"password": password, "csrf_token": m.group(1), "next": "/"})


def live_socket(srv: Server, address: str = "127.0.0.1", host: str | None = None,
                headers: dict[str, str] | None = None):  # noqa: ANN201 - websockets' connection
    """A WebSocket to ``/ws/live`` from ``address``, with the Host header ``host``."""
    from websockets.sync.client import connect

    sock = socket.create_connection(("127.0.0.1", port_of(srv)), timeout=15,
                                    source_address=(address, 0))
    return connect(f"ws://{host or f'127.0.0.1:{port_of(srv)}'}/ws/live", sock=sock,
                   additional_headers=headers or {}, open_timeout=15)


def close_code(srv: Server, address: str, headers: dict[str, str]) -> int | None:
    """The code the server closes a live WebSocket with before any frame (None: it said hello)."""
    from websockets.exceptions import ConnectionClosed

    with live_socket(srv, address, headers=headers) as ws:
        try:
            ws.recv(timeout=15)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
    return None


# -- one lockout for the form, Bearer on HTTP and Bearer on the WebSocket --------------------


def test_wrong_bearers_lock_every_login_of_that_address_and_only_that_one(server):
    with client_at(server, "127.0.0.2") as guesser, client_at(server, "127.0.0.1") as other:
        for _ in range(ATTEMPTS):
            assert guesser.get("/api/people",
                               headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = form_login(guesser, PASSWORD)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0, r.text[:300]
        r = guesser.get("/api/people", headers=BEARER)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "even with the right password" in r.json()["detail"]
        assert close_code(server, "127.0.0.2", BEARER) == 4429  # the WebSocket's Bearer too
        # another address is not locked out
        assert other.get("/api/people", headers=BEARER).status_code == 200
        assert form_login(other, PASSWORD).status_code == 303
        assert close_code(server, "127.0.0.1", BEARER) is None


def test_wrong_form_passwords_lock_the_bearer_of_that_address(server):
    with client_at(server, "127.0.0.3") as guesser:
        for _ in range(ATTEMPTS):
            assert form_login(guesser, "wrong password").status_code == 401
        r = guesser.get("/api/people", headers=BEARER)
        assert r.status_code == 429, r.text
        assert close_code(server, "127.0.0.3", BEARER) == 4429


def test_wrong_bearers_on_the_websocket_count_too(server):
    with client_at(server, "127.0.0.5") as guesser:
        for _ in range(ATTEMPTS):
            assert close_code(server, "127.0.0.5", {"Authorization": "Bearer wrong"}) == 4401
        assert form_login(guesser, PASSWORD).status_code == 429


def test_health_stays_fast_during_a_bearer_flood(server):
    """40 wrong Bearer guesses from 4 threads at one address while another client polls
    /api/health: the guesses past the lockout cost no scrypt, none of them runs on the
    event loop."""
    statuses: list[int] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        with client_at(server, "127.0.0.4") as c:
            for i in range(10):
                code = c.get("/api/people",
                             headers={"Authorization": f"Bearer guess-{n}-{i}"}).status_code
                with lock:
                    statuses.append(code)

    with client_at(server) as c:
        c.get("/api/health")  # connection open before the flood
        threads = [threading.Thread(target=guess, args=(n,)) for n in range(4)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        health_ms: list[float] = []
        while (any(t.is_alive() for t in threads) or len(health_ms) < 5) and len(health_ms) < 2000:
            t1 = time.perf_counter()
            assert c.get("/api/health").status_code == 200
            health_ms.append((time.perf_counter() - t1) * 1e3)
        for t in threads:
            t.join(timeout=120)
        flood_s = time.perf_counter() - t0
    p50, p95 = statistics.median(health_ms), statistics.quantiles(health_ms, n=20)[18]
    print(f"\nflood: {len(statuses)} guesses in {flood_s:.2f} s ({len(statuses) / flood_s:.1f}/s), "
          f"{statuses.count(401)} checked (401), {statuses.count(429)} locked out (429); "
          f"/api/health p50 {p50:.1f} ms, p95 {p95:.1f} ms over {len(health_ms)} requests")
    assert len(statuses) == 40
    assert statuses.count(401) <= ATTEMPTS and statuses.count(429) >= 40 - ATTEMPTS, statuses
    # scrypt on the event loop (the old way): p50 25-40 ms, p95 ~400 ms (a health request
    # waits behind the guesses in flight); now a few ms
    assert p50 < 50 and p95 < 200, (p50, p95)


# -- authentication before the body ------------------------------------------------------


@pytest.mark.parametrize("path, status", [("/api/analyze", 401), ("/api/people", 401),
                                          ("/people", 303)])
def test_a_private_server_refuses_an_anonymous_upload_before_reading_it(server, path, status):
    """A 50 MB multipart upload without credentials: the answer comes after the first
    megabyte, while the server still waits for the other 49 (it never asked for them)."""
    size = 50 * 2**20
    boundary = "maskwatch-test-boundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port_of(server)}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
               f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as s:
        s.sendall(request + head + b"\0" * 2**20)
        t0 = time.perf_counter()
        try:
            reply = s.recv(65536)
        except TimeoutError:
            pytest.fail("no answer in 10 s: the server waits for the body of an anonymous upload")
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:300]
    if status == 303:
        assert b"location: /login?next=" in reply.lower()
    print(f"\n{path}: {status} after 1 MB of 50 MB, {(time.perf_counter() - t0) * 1e3:.1f} ms")


# -- Host allow-list ------------------------------------------------------------------------


def test_a_foreign_host_is_refused_on_http_and_websocket(server):
    from websockets.exceptions import InvalidStatus

    port = port_of(server)
    with client_at(server) as c:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.",
                     ""):
            r = c.get("/api/health", headers={"Host": host})
            assert (r.status_code == 400
                    and r.json()["detail"].startswith("host not allowed")), (host, r.text)
        r = c.post("/api/analyze", headers={"Host": "evil.example", **BEARER},
                   files={"file": ("a.png", png_bytes(), "image/png")})
        assert r.status_code == 400
        # the localhost names, any port, and the name given with --allowed-host
        for host in (f"127.0.0.1:{port}", "localhost", f"LOCALHOST:{port}", "[::1]:8000",
                     "camera.lan", f"Camera.LAN:{port}"):
            assert c.get("/api/health", headers={"Host": host}).status_code == 200, host
    with pytest.raises(InvalidStatus) as refused:
        live_socket(server, host=f"evil.example:{port}", headers=BEARER)
    assert refused.value.response.status_code == 403
    with live_socket(server, host=f"camera.lan:{port}", headers=BEARER) as ws:
        assert '"hello"' in ws.recv(timeout=15)


@pytest.mark.parametrize("host, extra, allowed, refused", [
    ("127.0.0.1", [], ["localhost", "127.0.0.1", "[::1]"],
     ["testserver", "evil.example", "10.0.0.1"]),
    ("0.0.0.0", [], ["localhost"], ["0.0.0.0", "192.168.1.20"]),
    ("::", [], ["[::1]"], ["[::]", "::"]),
    ("192.168.1.20", [], ["192.168.1.20", "localhost"], ["192.168.1.21"]),
    ("fe80::1", [], ["[fe80::1]"], ["fe80::1"]),
    ("camera-box.lan", ["Other.Lan"], ["camera-box.lan", "other.lan"], ["evil.example"]),
])
def test_allowed_hosts(host, extra, allowed, refused):
    from maskwatch.web.guards import host_allowed

    s = WebSettings(host=host, allowed_hosts=extra)
    names = s.allowed_host_names()
    for h in allowed:
        assert host_allowed(f"{h}:8000", names) and host_allowed(h, names), h
    for h in refused:
        assert not host_allowed(h, names), h


def test_a_star_allows_any_host():
    from maskwatch.web.guards import host_allowed

    assert WebSettings(allowed_hosts=["*"]).allowed_host_names() is None
    assert host_allowed("anything.example:1234", None)


@pytest.mark.parametrize("value", ["http://camera.lan", "camera.lan:8000", "camera lan",
                                   "camera.lan/x", ""])
def test_serve_refuses_a_malformed_allowed_host(value, tmp_path):
    r = subprocess.run([sys.executable, "-m", "maskwatch.cli", "serve", "--allowed-host", value],
                       capture_output=True, text=True, timeout=60,
                       env={"MASKWATCH_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, r.stderr
    assert "--allowed-host" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- cross-site POSTs -------------------------------------------------------------------------


CROSS_SITE = [{"Origin": "http://evil.example"}, {"Origin": "null"},
              {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}]


def test_cross_site_posts_are_refused_on_the_real_server(server):
    port = port_of(server)
    with client_at(server) as c:
        for headers in [*CROSS_SITE, {"Origin": f"http://127.0.0.1:{port + 1}"}]:
            r = c.post("/api/analyze", headers={**headers, **BEARER},
                       files={"file": ("a.png", png_bytes(), "image/png")})
            assert r.status_code == 403 and "cross-site" in r.json()["detail"], (headers, r.text)
        page = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
        for headers in (page, {}):  # a page of this server; curl or an API client
            r = c.post("/api/analyze", headers={**headers, **BEARER},
                       files={"file": ("a.png", png_bytes(), "image/png")})
            assert r.status_code == 200 and r.json()["faces"] == [], (headers, r.text)


def test_cross_site_posts_are_refused_on_open_routes(client):
    """On localhost /api/analyze needs no login: a page of another site must not use it."""
    client.cookies.clear()
    files = {"file": ("a.png", png_bytes(), "image/png")}
    for headers in CROSS_SITE:
        r = client.post("/api/analyze", headers=headers, files=files)
        assert r.status_code == 403 and "cross-site" in r.json()["detail"], (headers, r.text)
    r = client.post("/api/analyze",
                    headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
                    files=files)
    assert r.status_code == 200
    assert client.post("/api/analyze", files=files).status_code == 200
    # reads pass
    assert client.get("/api/health", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


# -- the route table --------------------------------------------------------------------------


def app_routes(app) -> list:  # noqa: ANN001 - a FastAPI app
    """Every route of ``app`` with its full path, routers included (newer FastAPI keeps
    included routers as one entry each in ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def test_every_guarded_route_is_in_the_guards_table(tmp_path):
    """Walk the app's routes: every one whose dependencies need the admin (or the viewer)
    is classified so by the middleware, and the open ones are left open."""
    from tests.web.conftest import make_settings

    from maskwatch.web import create_app
    from maskwatch.web.deps import (
        require_admin,
        require_admin_page,
        require_viewer,
        require_viewer_page,
    )
    from maskwatch.web.guards import ADMIN, VIEWER, required_level

    app = create_app(make_settings(tmp_path))
    levels = {require_admin: ADMIN, require_admin_page: ADMIN, require_viewer: VIEWER,
              require_viewer_page: VIEWER}
    seen = {ADMIN: 0, VIEWER: 0, None: 0}
    for route in app_routes(app):
        dependant, methods = getattr(route, "dependant", None), getattr(route, "methods", None)
        if dependant is None or not methods:  # mounts, the OpenAPI document, the WebSocket
            continue
        want = next((levels[d.call] for d in dependant.dependencies if d.call in levels), None)
        path = re.sub(r"\{[^}]+\}", "x1", route.path)
        for method in methods:
            assert required_level(method, path) == want, (method, route.path)
            seen[want] += 1
    assert seen[ADMIN] >= 19 and seen[VIEWER] >= 5 and seen[None] >= 5, seen


def test_the_guard_answers_without_reading_the_body(tmp_path):
    """The middleware alone, as ASGI: an anonymous admin request is answered and
    ``receive`` is never called."""
    import asyncio

    from tests.web.conftest import make_settings

    from maskwatch.web.guards import Guards

    async def app(scope, receive, send):  # noqa: ANN001, ANN202 - the app behind the guard
        raise AssertionError("the request reached the app")

    async def receive():  # noqa: ANN202
        raise AssertionError("the body was read")

    sent: list[dict] = []

    async def send(message):  # noqa: ANN001, ANN202
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/people", "root_path": "",
             "query_string": b"",
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", b"52428800")],
             "client": ("127.0.0.1", 5555), "app": None}
    asyncio.run(Guards(app, settings=make_settings(tmp_path))(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 401
