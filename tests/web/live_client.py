"""Frames for the live WebSocket, and a client for a real server's ``/ws/live``.

``clip_frames`` reads the shared clip (several unmasked faces) as JPEG bytes;
``LiveClient`` speaks the protocol of :mod:`maskwatch.web.live` to a server started
by ``running_server`` (tests/web/browser.py), one frame in flight at a time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2


def clip_frames(datasets: Path, n: int, start: int = 0) -> list[bytes]:
    """Up to ``n`` JPEG frames of ``videos/short_hamilton_clip.mp4`` from frame ``start``."""
    cap = cv2.VideoCapture(str(datasets / "videos" / "short_hamilton_clip.mp4"))
    out = []
    i = 0
    while len(out) < n:
        ok, frame = cap.read()
        if not ok:
            break
        if i >= start:
            out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
        i += 1
    cap.release()
    return out


def send_frames(ws: Any, frames: list[bytes], first_seq: int = 0) -> list[dict]:
    """Send frames one at a time over a TestClient WebSocket; the server's answers."""
    results = []
    for k, jpg in enumerate(frames):
        ws.send_bytes((first_seq + k).to_bytes(4, "big") + jpg)
        msg = ws.receive_json()
        assert msg.get("seq") == first_seq + k, msg
        results.append(msg)
    return results


class LiveClient:
    """A browser-like live session on a real server: ``with LiveClient(url) as c: c.send(frames)``.

    Args:
        base_url: ``http://127.0.0.1:PORT`` of the server.
        headers: extra handshake headers (e.g. ``Authorization`` for a private server).
        timeout: seconds to wait for any one answer.
    """

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        from websockets.sync.client import connect

        self._connection = connect(base_url.replace("http://", "ws://", 1) + "/ws/live",
                                   additional_headers=headers or {}, open_timeout=timeout,
                                   max_size=2**24)
        self.ws = self._connection.__enter__()  # websockets wants its connection entered
        self.timeout = timeout
        self.hello = json.loads(self.ws.recv(timeout=timeout))
        self.source = self.hello.get("source")
        self.seq = 0

    def send(self, frames: list[bytes]) -> list[dict]:
        """Send each frame and wait for its answer; returns the answers in order."""
        out = []
        for jpg in frames:
            self.ws.send(self.seq.to_bytes(4, "big") + jpg)
            msg = json.loads(self.ws.recv(timeout=self.timeout))
            if msg.get("seq") != self.seq:
                raise AssertionError(f"answer for frame {self.seq} expected, got {msg}")
            out.append(msg)
            self.seq += 1
        return out

    def fps(self, frames: list[bytes], seconds: float) -> tuple[float, list[dict]]:
        """Frames per second answered while looping over ``frames`` for about ``seconds``."""
        answers: list[dict] = []
        t0 = time.perf_counter()
        k = 0
        while time.perf_counter() - t0 < seconds:
            answers += self.send([frames[k % len(frames)]])
            k += 1
        return len(answers) / (time.perf_counter() - t0), answers

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def __enter__(self) -> LiveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
