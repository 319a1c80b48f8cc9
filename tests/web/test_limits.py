"""Request limits of the web app (issue 15): bounds on every query and path parameter, a
body limit per route that answers 413 whether or not the client states a length, the
WebSocket frame limit, and an OpenAPI schema that documents the answers really given.

The defects are shown against the real server (``maskwatch serve`` under uvicorn on
127.0.0.1, uploads limited to 1 MiB); the schema and the parameter table use the
TestClient app of ``conftest.py``.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from tests.web.browser import Server, running_server
from tests.web.conftest import BEARER, PASSWORD

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server (open on localhost) that accepts uploads of at most 1 MiB."""
    home = tmp_path_factory.mktemp("limits") / "home"
    home.mkdir()
    with running_server(home, PASSWORD, "-q", "--max-upload-mb", "1") as srv:
        yield srv


def raw_request(url: str, method: str, path: str, headers: dict[str, str],
                chunks: Iterable[bytes], *, chunked: bool = True,
                timeout: float = 60.0) -> tuple[int, bytes, int]:
    """One HTTP/1.1 request over a plain socket, its body sent from another thread (chunked:
    no Content-Length) while this one waits for the answer, as a streaming client does.

    Returns:
        (status, response body, body bytes the server took before answering or closing).
    """
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += ("Transfer-Encoding: chunked\r\n" if chunked else "") + "\r\n"
    sent = [0]

    def write() -> None:
        try:
            sock.sendall(head.encode())
            for c in chunks:
                sock.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n" if chunked else c)
                sent[0] += len(c)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before taking the whole body: expected

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
    finally:
        writer.join(timeout)
        sock.close()
    return resp.status, body, sent[0]


def blocks(total: int, size: int = 64 * 1024, fill: bytes = b"x") -> Iterator[bytes]:
    for start in range(0, total, size):
        yield fill * min(size, total - start)


# -- query and path parameters ----------------------------------------------------------------


def test_offset_past_sqlite_integers_is_a_422_on_the_real_server(server):
    # 2**63 overflowed SQLite's integer: 500 before
    with httpx.Client(base_url=server.url, headers=BEARER, timeout=30) as c:
        for offset in (2**63, 10**9 + 1, -1):
            r = c.get("/api/events", params={"offset": offset})
            assert r.status_code == 422, (offset, r.text)
            assert r.json()["detail"].startswith("bad request: query.offset"), r.text
        r = c.get("/api/events", params={"offset": 10**9})
        assert r.status_code == 200 and r.json()["events"] == []
        assert c.get("/api/health").status_code == 200


@pytest.mark.parametrize("path, params, where", [
    ("/api/events", {"since": "1e300"}, "query.since"),
    ("/api/events", {"since": "nan"}, "query.since"),
    ("/api/events", {"until": "inf"}, "query.until"),
    ("/api/events", {"until": "-1"}, "query.until"),
    ("/api/events", {"source": "s" * 501}, "query.source"),
    ("/api/events", {"identity": "n" * 401}, "query.identity"),
    ("/api/events", {"mask_state": "masked"}, "query.mask_state"),
    ("/api/events.csv", {"since": "-inf"}, "query.since"),
    ("/api/events.csv", {"until": "1e12"}, "query.until"),
    ("/api/events.csv", {"source": "s" * 501}, "query.source"),
    ("/api/stats", {"since": "nan"}, "query.since"),
    ("/api/stats", {"until": "1e308"}, "query.until"),
    ("/api/stats", {"source": "s" * 501}, "query.source"),
    ("/api/stats", {"bucket_s": "0"}, "query.bucket_s"),
])
def test_query_parameters_out_of_range_are_refused(client, path, params, where):
    r = client.get(path, params=params, headers=BEARER)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"bad request: {where}"), r.text


@pytest.mark.parametrize("method, path, where", [
    ("get", "/api/people/" + "n" * 401, "path.name"),
    ("get", "/api/people/" + "n" * 401 + "/thumbnail", "path.name"),
    ("delete", "/api/people/" + "n" * 401, "path.name"),
    ("delete", "/api/sources/" + "7" * 65, "path.source_id"),
    ("get", "/stream/" + "7" * 65 + ".jpg", "path.source_id"),
    ("get", "/stream/" + "7" * 65 + ".mjpg", "path.source_id"),
])
def test_path_parameters_too_long_are_refused(client, method, path, where):
    r = getattr(client, method)(path, headers=BEARER)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"bad request: {where}"), r.text


def test_times_in_range_still_filter(client):
    r = client.get("/api/events", params={"since": 0, "until": 4102444800, "limit": 500},
                   headers=BEARER)
    assert r.status_code == 200, r.text
    r = client.get("/api/stats", params={"since": 1.5e9, "bucket_s": 60}, headers=BEARER)
    assert r.status_code == 200, r.text


# -- request bodies ---------------------------------------------------------------------------


def test_chunked_upload_over_the_limit_gets_413_not_400(server):
    # Before: a chunked body over the whole-app limit failed inside the form parser, which
    # FastAPI turned into "400 There was an error parsing the body". 22 MiB is over the old
    # limit (20 photos x 1 MiB + 1 MiB) and over the new one for /api/analyze (one photo).
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            'filename="big.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()
    status, body, sent = raw_request(server.url, "POST", "/api/analyze",
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                                     [head, *blocks(22 * MiB)])
    assert status == 413, body[:300]
    assert "larger than the limit" in json.loads(body)["detail"]
    assert sent < 22 * MiB  # answered before the client had sent everything
    assert httpx.get(server.url + "/api/health", timeout=10).status_code == 200


@pytest.mark.parametrize("method, path, content_type, admin", [
    ("PATCH", "/api/people/ann", "application/json", True),
    ("POST", "/api/sources", "application/json", True),
    ("POST", "/login", "application/x-www-form-urlencoded", False),
    ("POST", "/people/ann/rename", "application/x-www-form-urlencoded", True),
])
@pytest.mark.parametrize("chunked", [True, False])
def test_small_routes_refuse_bodies_over_64_kib(server, method, path, content_type, admin, chunked):
    # Before: these routes shared the enrolment limit (21 MiB here) and read 100 KiB
    # bodies into memory (JSON, forms) before answering 401/403/404/422.
    size = 100 * 1024
    if content_type == "application/json":
        fill = b'{"name": "' + b"x" * (size - 12) + b'"}'
    else:
        fill = b"a=" + b"x" * (size - 2)
    headers = {"Content-Type": content_type, **(BEARER if admin else {})}
    if not chunked:
        headers["Content-Length"] = str(len(fill))
    status, body, _ = raw_request(server.url, method, path, headers, [fill], chunked=chunked)
    assert status == 413, (status, body[:300])
    assert "larger than the limit of 65,536 bytes" in json.loads(body)["detail"]


def test_enrolment_takes_more_than_one_photo_but_analyze_only_one(server):
    # two 0.9 MiB files: over one upload, within an enrolment of several photos
    files = [("photos", (f"p{i}.jpg", b"x" * (9 * MiB // 10), "image/jpeg")) for i in range(2)]
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/api/people", data={"name": "Ann"}, files=files, headers=BEARER)
        assert r.status_code == 415, r.text  # read and checked: not an image
        r = c.post("/api/analyze", files=[("file", ("p.jpg", b"x" * (3 * MiB // 2), "image/jpeg"))])
        assert r.status_code == 413 and "larger than the limit" in r.json()["detail"], r.text


def test_a_websocket_frame_over_the_limit_closes_the_socket(client):
    from starlette.websockets import WebSocketDisconnect

    limit = client.app.state.settings.max_upload_bytes
    with client.websocket_connect("/ws/live") as ws:
        assert ws.receive_json()["type"] == "hello"
        ws.send_bytes((1).to_bytes(4, "big") + b"x" * limit)  # the largest frame: answered
        assert "not an image" in ws.receive_json()["error"]
        ws.send_bytes((2).to_bytes(4, "big") + b"x" * (limit + 1))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1009  # "message too big", as uvicorn's own ws_max_size answers


# -- OpenAPI ----------------------------------------------------------------------------------


def _operations(schema: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in schema["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def test_openapi_documents_the_error_body_and_media_types(client):
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components and "ValidationError" not in components
    assert components["Problem"]["properties"]["detail"]["type"] == "string"
    assert components["Problem"]["required"] == ["detail"]
    for method, path, op in _operations(schema):
        for code, resp in op["responses"].items():
            if code.startswith(("4", "5")):
                content = resp["content"]
                assert list(content) == ["application/json"], (method, path, code)
                assert content["application/json"]["schema"] == PROBLEM_REF
    paths = schema["paths"]

    def media(path: str, method: str = "get") -> list[str]:
        return list(paths[path][method]["responses"]["200"]["content"])

    assert media("/api/events.csv") == ["text/csv"]
    assert media("/api/people/{name}/thumbnail") == ["image/jpeg"]
    assert media("/stream/{source_id}.jpg") == ["image/jpeg"]
    assert media("/stream/{source_id}.mjpg") == ["multipart/x-mixed-replace"]
    assert media("/api/events") == ["application/json"]


#: Status codes each route is known to give (every one must be documented).
EXPECTED = {
    ("GET", "/api/health"): {200},
    ("POST", "/api/analyze"): {200, 400, 413, 415, 422},
    ("GET", "/api/sources"): {200},
    ("POST", "/api/sources"): {201, 401, 403, 413, 422, 429},
    ("DELETE", "/api/sources/{source_id}"): {200, 401, 404, 422},
    ("GET", "/api/people"): {200, 401, 503},
    ("POST", "/api/people"): {201, 400, 401, 403, 409, 413, 415, 422, 503},
    ("GET", "/api/people/{name}"): {200, 401, 404, 422, 503},
    ("PATCH", "/api/people/{name}"): {200, 401, 403, 404, 409, 413, 422, 503},
    ("DELETE", "/api/people/{name}"): {200, 401, 403, 404, 422, 503},
    ("GET", "/api/people/{name}/thumbnail"): {200, 401, 404, 422, 503},
    ("POST", "/api/people/{name}/photos"): {200, 400, 401, 403, 404, 413, 415, 422, 503},
    ("GET", "/api/events"): {200, 400, 401, 422, 503},
    ("GET", "/api/events.csv"): {200, 400, 401, 422, 503},
    ("GET", "/api/stats"): {200, 400, 401, 422, 503},
    ("GET", "/stream/{source_id}.mjpg"): {200, 404, 422},
    ("GET", "/stream/{source_id}.jpg"): {200, 404, 422},
}


def test_openapi_documents_every_status_a_route_gives(client):
    schema = client.get("/openapi.json").json()
    ops = {(m, p): op for m, p, op in _operations(schema)}
    assert set(EXPECTED) <= set(ops), set(EXPECTED) - set(ops)
    for key, codes in EXPECTED.items():
        documented = {int(c) for c in ops[key]["responses"]}
        assert codes <= documented, (key, codes - documented)


def test_real_answers_are_documented(client):
    """A handful of real error answers, each checked against its operation's responses."""
    schema = client.get("/openapi.json").json()
    ops = {(m, p): op for m, p, op in _operations(schema)}
    client.cookies.clear()
    json_body = {**BEARER, "content-type": "application/json"}
    empty, text = {"file": ("e.jpg", b"", "image/jpeg")}, {"file": ("t.jpg", b"text", "image/jpeg")}
    cases = [
        ("GET", "/api/people/{name}", client.get("/api/people/nobody", headers=BEARER)),
        ("GET", "/api/people/{name}", client.get("/api/people/nobody")),
        ("POST", "/api/analyze", client.post("/api/analyze", files=empty)),
        ("POST", "/api/analyze", client.post("/api/analyze", files=text)),
        ("POST", "/api/sources", client.post("/api/sources", json={"spec": "ftp://x"},
                                             headers=BEARER)),
        ("POST", "/api/sources", client.post("/api/sources", json=["no"], headers=BEARER)),
        ("DELETE", "/api/sources/{source_id}", client.delete("/api/sources/77", headers=BEARER)),
        ("PATCH", "/api/people/{name}", client.patch("/api/people/x", json={"n": 1},
                                                     headers=BEARER)),
        ("PATCH", "/api/people/{name}", client.patch("/api/people/x", content=b"{" * 70_000,
                                                     headers=json_body)),
        ("GET", "/stream/{source_id}.jpg", client.get("/stream/77.jpg")),
        ("GET", "/api/events", client.get("/api/events", params={"limit": 0}, headers=BEARER)),
    ]
    for method, path, r in cases:
        documented = ops[(method, path)]["responses"]
        assert str(r.status_code) in documented, (method, path, r.status_code, r.text)
        assert r.status_code >= 400 and set(r.json()) == {"detail"}, r.text
        assert isinstance(r.json()["detail"], str)
