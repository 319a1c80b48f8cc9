"""Uploaded images (issue 15): decoding memory, pixel limits (413) and the decode budget.

The memory figures are measured on the real server (``maskwatch serve`` in a subprocess,
its VmRSS sampled every 5 ms); the payloads are made here (tests/big_images.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from tests.big_images import PeakRss, bomb_png, idle_rss_mb, rgba16_png
from tests.web.browser import running_server
from tests.web.conftest import BEARER, PASSWORD

from maskwatch.web.uploads import (
    MAX_CONCURRENT_DECODES,
    PixelBudget,
    UploadError,
    check_image,
    decode_upload,
)

BOMBS = {  # header only: the size claimed is what must refuse them
    "over Pillow's limit (179 M pixels)": bomb_png(20000, 20000),
    "over OpenCV's limit too (2**30 pixels)": bomb_png(40000, 40000),
}


def _one_sentence_413(r: httpx.Response) -> str:
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "over the limit" in detail and "\n" not in detail and "Traceback" not in detail
    return detail


# -- logic, in process ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BOMBS))
def test_check_image_refuses_a_bomb_with_413(kind):
    with pytest.raises(UploadError) as exc:
        check_image(BOMBS[kind], name="bomb.png", max_bytes=10 * 2**20, max_pixels=40_000_000)
    assert exc.value.status == 413 and str(exc.value).startswith("bomb.png: ")


def test_check_image_decodes_16_bit_rgba():
    img = check_image(rgba16_png(500), name="a.png", max_bytes=2**20, max_pixels=1_000_000)
    assert img.shape == (500, 500, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("kind", list(BOMBS))
def test_bomb_on_analyze_is_413_and_the_server_goes_on(client, kind):
    client.cookies.clear()
    r = client.post("/api/analyze", files={"file": ("bomb.png", BOMBS[kind], "image/png")})
    assert "bomb.png" in _one_sentence_413(r)
    assert client.get("/api/health").status_code == 200


def test_bomb_in_an_enrolment_is_413_and_nobody_is_enrolled(client):
    client.cookies.clear()
    r = client.post("/api/people", data={"name": "Bomb Person"}, headers=BEARER,
                    files=[("photos", ("bomb.png", BOMBS["over Pillow's limit (179 M pixels)"],
                                       "image/png"))])
    _one_sentence_413(r)
    assert client.get("/api/people/Bomb Person", headers=BEARER).status_code == 404


def test_a_live_frame_over_the_limit_gets_an_error_and_the_stream_goes_on(client):
    client.cookies.clear()
    frame = cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))[1].tobytes()
    with client.websocket_connect("/ws/live") as ws:
        assert ws.receive_json()["type"] == "hello"
        ws.send_bytes((7).to_bytes(4, "big") + BOMBS["over Pillow's limit (179 M pixels)"])
        refused = json.loads(ws.receive_text())
        assert refused["seq"] == 7 and "over the limit" in refused["error"]
        ws.send_bytes((8).to_bytes(4, "big") + frame)
        answer = json.loads(ws.receive_text())
        assert answer["seq"] == 8 and answer["width"] == 320 and "error" not in answer


def test_pixel_budget_lets_small_ones_pass_and_big_ones_take_turns():
    async def scenario() -> None:
        budget = PixelBudget(40)
        first = await budget.acquire(36)
        assert await budget.acquire(1) == 1 and budget.used == 37  # a live frame beside it
        second = asyncio.ensure_future(budget.acquire(36))
        gone = asyncio.ensure_future(budget.acquire(30))
        await asyncio.sleep(0.01)
        assert not second.done() and not gone.done()
        gone.cancel()  # a client that went away while waiting: no turn kept
        await asyncio.sleep(0.01)
        assert await budget.acquire(2) == 2  # fits (39): does not wait behind the big ones
        budget.release(first)
        budget.release(2)
        assert await second == 36 and budget.used == 37
        budget.release(1)
        budget.release(36)
        assert budget.used == 0
        assert await budget.acquire(10**9) == 40  # larger than the budget: takes all of it

    asyncio.run(scenario())


def test_big_decodes_take_turns_and_a_live_frame_does_not_wait():
    # Budget: MAX_CONCURRENT_DECODES images of max_pixels. Two 16 M pixel uploads with a
    # limit of 20 M are decoded one after the other; a 0.3 M pixel frame goes beside them.
    assert MAX_CONCURRENT_DECODES == 1
    big = rgba16_png(4000)
    frame = cv2.imencode(".jpg", np.full((480, 640, 3), 90, np.uint8))[1].tobytes()
    limits = {"max_bytes": 10 * 2**20, "max_pixels": 20_000_000}

    async def timed(data: bytes, name: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        img = await decode_upload(data, name=name, **limits)
        assert img.shape[2] == 3
        return t0, time.perf_counter()

    async def scenario() -> None:
        # How long one big decode takes on this machine: the quicker of two, as the first
        # call of a run can take twice as long (cold caches, a busy CI neighbour).
        one = min(end - start for start, end in [await timed(big, f"alone{i}.png")
                                                 for i in range(2)])
        t0 = time.perf_counter()
        first = asyncio.ensure_future(timed(big, "first.png"))
        second = asyncio.ensure_future(timed(big, "second.png"))
        # Both read their headers at once; one decodes, one waits. The frame comes while
        # about three quarters of the first big decode is still to run.
        await asyncio.sleep(max(0.02, 0.25 * one))
        small = await timed(frame, "frame")
        (_, end1), (_, end2) = await first, await second
        assert small[1] - small[0] < 0.25 * one, (small[1] - small[0], one)  # did not wait
        assert small[1] < min(end1, end2), (small[1] - t0, end1 - t0, end2 - t0)
        assert abs(end2 - end1) > 0.5 * one, (end1 - t0, end2 - t0, one)  # one after the other

    asyncio.run(scenario())


# -- the real server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = Path(tmp_path_factory.mktemp("uploads")) / "home"
    home.mkdir()
    with running_server(home, PASSWORD) as srv:  # default limits: 10 MB, 40 M pixels
        yield srv


@pytest.fixture(scope="module")
def big16() -> bytes:
    return rgba16_png(6000)  # 0.5 MB; 288 MB at 16 bits, 108 MB as BGR uint8


def _analyze(url: str, data: bytes) -> httpx.Response:
    return httpx.post(url + "/api/analyze", files={"file": ("big16.png", data, "image/png")},
                      timeout=180)


#: Peak RSS growth allowed for one 6000x6000 16-bit RGBA upload, MB (the issue's target).
#: The decode costs about 250 MB at most (it cost 2.5 GB through float copies); the
#: accurate-mode analysis that follows searches the photo shrunk to 2048 px in tiles
#: (about 55 MB), with the 108 MB image alive: about 250 MB measured in all.
ONE_UPLOAD_MB = 300
#: ... and for four at once (8.9 GB before): one decode at a time, about 480 MB measured.
FOUR_UPLOADS_MB = 1000


def test_a_big_16_bit_rgba_upload_is_analysed_in_bounded_memory(server, big16):
    idle = idle_rss_mb(server.pid, 0.5)
    with PeakRss(server.pid) as peak:
        r = _analyze(server.url, big16)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] == 6000 and body["height"] == 6000 and body["faces"] == []
    assert "detect" in body["timings_ms"]
    growth = peak.peak - idle
    assert peak.samples > 20 and growth < ONE_UPLOAD_MB, (f"{growth:.0f} MB over idle "
                                                          f"({idle:.0f} MB)")


def test_four_big_uploads_at_once_stay_bounded(server, big16):
    idle = idle_rss_mb(server.pid, 0.5)
    with PeakRss(server.pid) as peak, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _analyze(server.url, big16), range(4)))
    assert [r.status_code for r in answers] == [200] * 4
    growth = peak.peak - idle
    assert growth < FOUR_UPLOADS_MB, f"{growth:.0f} MB over idle ({idle:.0f} MB)"


@pytest.mark.parametrize("kind", list(BOMBS))
def test_bombs_are_413_on_the_real_server(server, kind):
    r = httpx.post(server.url + "/api/analyze",
                   files={"file": ("bomb.png", BOMBS[kind], "image/png")}, timeout=60)
    _one_sentence_413(r)
    r = httpx.post(server.url + "/api/people", data={"name": "Bomb"}, headers=BEARER, timeout=60,
                   files=[("photos", ("bomb.png", BOMBS[kind], "image/png"))])
    _one_sentence_413(r)
    assert httpx.get(server.url + "/api/people/Bomb", headers=BEARER).status_code == 404
    assert httpx.get(server.url + "/api/health").status_code == 200
