"""Writing YUV4MPEG2 (``.y4m``) files: the format Chromium's fake camera plays.

Browser tests and the web benchmark feed ``--use-file-for-fake-video-capture=FILE``
with frames built from the shared data; Chromium loops the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import cv2
import numpy as np


def write_y4m(frames: Iterable[np.ndarray], path: str | os.PathLike[str], fps: int = 30) -> int:
    """Write BGR uint8 frames (all of one even size) as 4:2:0 YUV4MPEG2.

    Args:
        frames: (H, W, 3) BGR uint8 arrays; H and W must be even.
        path: the ``.y4m`` file to write.
        fps: frame rate written in the header (frames per second).

    Returns:
        The number of frames written.

    Raises:
        ValueError: no frames, odd sizes, or frames of different sizes.
    """
    count = 0
    size: tuple[int, int] | None = None
    with open(path, "wb") as f:
        for frame in frames:
            h, w = frame.shape[:2]
            if size is None:
                if h % 2 or w % 2:
                    raise ValueError(f"y4m 4:2:0 needs even sizes, got {w}x{h}")
                size = (w, h)
                f.write(f"YUV4MPEG2 W{w} H{h} F{int(fps)}:1 Ip A1:1 C420jpeg\n".encode())
            elif (w, h) != size:
                raise ValueError(f"frame {count} is {w}x{h}, the first was {size[0]}x{size[1]}")
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
            count += 1
    if count == 0:
        raise ValueError("no frames to write")
    return count
