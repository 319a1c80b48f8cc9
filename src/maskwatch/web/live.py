"""The live WebSocket: a browser's camera frames in, the engine's results out.

Protocol (``/ws/live``): the server first sends ``{"type": "hello", "source": ...}``.
The client then sends binary messages, each a 4-byte big-endian sequence number
followed by one JPEG frame; for each, the server replies with one text message: the
engine JSON of that frame (``analyze --json`` schema) plus ``"seq"`` and
``"server_ms"`` (decode + analysis time), or ``{"seq": n, "error": "..."}`` for a
frame it cannot use. Frames are handled one after another per connection, so a client
that keeps at most one or two frames in flight holds at most that much memory here.
On a private server the socket is closed with code 4401 without the login, and with
4429 while the client's address is locked out after failed logins.
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from maskwatch.web.deps import authenticate
from maskwatch.web.security import LockedOut
from maskwatch.web.uploads import UploadError, decode_upload

log = logging.getLogger(__name__)

router = APIRouter()


def _same_origin(ws: WebSocket) -> bool:
    """Browsers send Origin; refuse pages of other sites (cross-site WebSocket hijacking)."""
    origin = ws.headers.get("origin")
    if not origin:
        return True  # not a browser
    host = ws.headers.get("host", "")
    return urlsplit(origin).netloc == host


@router.websocket("/ws/live")
async def live_socket(ws: WebSocket) -> None:
    if not _same_origin(ws):
        await ws.close(code=1008, reason="cross-origin WebSocket refused")
        return
    await ws.accept()
    if ws.app.state.settings.watching_needs_login():
        # accepted first so that the page gets the code (a refused handshake is only 1006)
        try:
            ok = await authenticate(ws)  # a Bearer token counts under the one login lockout
        except LockedOut as exc:
            await ws.close(code=4429,
                           reason=f"too many failed attempts: locked for {exc.retry_after} s")
            return
        if not ok:
            await ws.close(code=4401, reason="log in first: this server is private")
            return
    svc = ws.app.state.service
    settings = ws.app.state.settings
    try:
        stream = svc.open_stream()
    except RuntimeError as exc:
        await ws.send_text(json.dumps({"type": "error", "error": str(exc)}))
        await ws.close(code=1013)
        return
    await ws.send_text(json.dumps({"type": "hello", "source": stream.name}))
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is None:
                await ws.send_text(json.dumps({"error": "send frames as binary messages: 4-byte "
                                                        "sequence number + JPEG"}))
                continue
            seq = int.from_bytes(data[:4], "big") if len(data) >= 4 else -1
            t0 = time.perf_counter()
            try:
                image = await decode_upload(data[4:], name=f"frame {seq}",
                                            max_bytes=settings.max_upload_bytes,
                                            max_pixels=settings.max_pixels)
            except UploadError as exc:
                await ws.send_text(json.dumps({"seq": seq, "error": str(exc)}))
                continue
            result = await svc.run(stream.process, image)
            out = result.to_dict()
            out["seq"] = seq
            out["server_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
            await ws.send_text(json.dumps(out))
    except WebSocketDisconnect:
        pass
    finally:
        await svc.close_stream(stream)
