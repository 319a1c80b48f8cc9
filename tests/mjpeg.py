"""A real MJPEG-over-HTTP stream server for the tests of live URL sources.

Used by ``tests/test_sources.py`` (the reader's reconnection and back-off) and
``tests/web/test_api.py`` (a server-side source that drops and comes back), through
the ``mjpeg_server`` fixture in ``tests/conftest.py`` or directly.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

#: Size of :func:`numbered_frame` by default, pixels.
W, H = 160, 120


def numbered_frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A BGR frame whose number can be read back from its mean brightness and text.

    The background level is ``(i * 7) % 200``; the number is written in white.
    """
    img = np.full((h, w, 3), (i * 7) % 200, np.uint8)
    cv2.putText(img, str(i), (10, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return img


class MJPEGServer:
    """Serves ``frames_per_connection`` JPEG frames per request as multipart MJPEG,
    then drops the connection; after ``connections`` requests it answers 503.

    ``None`` for either means no limit. :meth:`go_down` cuts every open stream and
    answers 503 to new requests until :meth:`come_back`, as a camera that drops off
    the network for a while. Frame ``i`` of the ``n``-th stream is
    ``numbered_frame(n * 10 + i)``, so a reader can tell which connection a frame
    came from; frames are ``interval_s`` seconds apart. With ``frames`` it serves those
    instead, in a loop.
    """

    def __init__(
        self,
        frames_per_connection: int | None = 6,
        connections: int | None = 2,
        size: tuple[int, int] = (W, H),
        interval_s: float = 0.01,
        frames: list[np.ndarray] | None = None,
    ):
        self.frames_per_connection = frames_per_connection
        self.connections = connections
        self.size = size
        self.interval_s = interval_s
        self.frames = frames
        self.served = 0
        self.requests = 0
        self.refused = 0  # requests answered 503 (over the limit or down)
        self.frames_sent = 0
        self.lock = threading.Lock()
        self.up = threading.Event()
        self.up.set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                with server.lock:
                    server.requests += 1
                    allowed = server.up.is_set() and (
                        server.connections is None or server.served < server.connections
                    )
                    if allowed:
                        server.served += 1
                    else:
                        server.refused += 1
                    number = server.served
                if not allowed:
                    self.send_error(503, "no more streams")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                try:
                    i = 0
                    while server.up.is_set() and (
                        server.frames_per_connection is None or i < server.frames_per_connection
                    ):
                        img = (server.frames[i % len(server.frames)] if server.frames
                               else numbered_frame(number * 10 + i, *server.size))
                        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[
                            1
                        ].tobytes()
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(data)}\r\n\r\n".encode()
                            + data
                            + b"\r\n"
                        )
                        self.wfile.flush()
                        with server.lock:
                            server.frames_sent += 1
                        i += 1
                        time.sleep(server.interval_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True  # the drop the client must survive

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def go_down(self) -> None:
        """Cut the open streams (within one frame interval) and refuse new ones."""
        self.up.clear()

    def come_back(self) -> None:
        """Serve streams again."""
        self.up.set()

    def __enter__(self) -> MJPEGServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.up.clear()  # end endless streams so that their threads finish
        self.httpd.shutdown()
        self.httpd.server_close()
