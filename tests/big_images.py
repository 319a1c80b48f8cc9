"""Payloads for the image-memory and pixel-limit tests (issue 15), made by the tests.

* :func:`rgba16_png`: a smooth 16-bit RGBA gradient, 6000x6000 in about 0.5 MB: within
  the web app's limits of bytes and pixels, and 288 MB once decoded at 16 bits.
* :func:`bomb_png`: a PNG whose header claims ``width x height`` pixels; only its first
  rows are stored, as in a decompression-bomb attack (the size alone must refuse it).
* :class:`PeakRss`: the resident memory of a process sampled every few milliseconds.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _png(width: int, height: int, depth: int, colour: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def rgba16_png(side: int = 6000) -> bytes:
    """A ``side`` x ``side`` 16-bit RGBA PNG: red and blue ramps across, green down,
    alpha from opaque to about 40% across. Written row by row with PNG's "up" filter,
    whose rows here take two byte patterns only, so it compresses to ~80 bytes a row
    and is made in about 1.5 s (cv2.imwrite takes 4 to 6 s and gives 1 to 3 MB)."""
    x = np.arange(side, dtype=np.uint32)
    first = np.zeros((side, 4), ">u2")
    first[:, 0] = x * 65535 // max(side - 1, 1)
    first[:, 2] = 65535 - first[:, 0]
    first[:, 3] = 65535 - x * 40000 // max(side - 1, 1)
    step = 65535 // max(side - 1, 1)  # green, big-endian: rises by this each row
    comp = zlib.compressobj(6)
    parts = [comp.compress(b"\x00" + first.tobytes())]
    rows: dict[int, bytes] = {}
    for y in range(1, side):
        carry = ((y * step) >> 8) - (((y - 1) * step) >> 8)  # into green's high byte
        row = rows.get(carry)
        if row is None:
            diff = np.zeros((side, 8), np.uint8)
            diff[:, 2], diff[:, 3] = carry, step & 0xFF
            row = rows[carry] = b"\x02" + diff.tobytes()
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    return _png(side, side, 16, 6, b"".join(parts))


def bomb_png(width: int, height: int, rows: int = 4) -> bytes:
    """An 8-bit gray PNG whose header says ``width x height``; only ``rows`` rows of
    zeros are stored, so the file is tiny whatever the size it claims."""
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(bytes(1 + width)) for _ in range(rows)) + comp.flush()
    return _png(width, height, 8, 0, idat)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


class PeakRss:
    """Highest resident memory of process ``pid`` while the ``with`` block runs,
    sampled every ``every_s`` seconds in a thread (MB: ``peak``)."""

    def __init__(self, pid: int, every_s: float = 0.005) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self.samples += 1
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRss:
        self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, rss_mb(self.pid))


def idle_rss_mb(pid: int, seconds: float = 1.0) -> float:
    """Median resident memory of an idle process over ``seconds``, MB."""
    values = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values.append(rss_mb(pid))
        time.sleep(0.02)
    return float(np.median(values))
