"""Tests for maskwatch.sources: every input kind, its failures, and stream reconnection.

Videos are written into ``tmp_path`` with ``cv2.VideoWriter``; streams come from a
small MJPEG-over-HTTP server started on 127.0.0.1 in a thread (tests/mjpeg.py).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from tests.mjpeg import H, MJPEGServer, W, numbered_frame

from maskwatch.sources import (
    Frame,
    FrameSource,
    SourceError,
    SourceProblem,
    mask_url,
    open_source,
    parse_source,
)

N_FRAMES, FPS = 32, 10.0


def write_video(path: Path, fourcc: str, n: int = N_FRAMES, fps: float = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"cannot write {fourcc} video here"
    for i in range(n):
        writer.write(numbered_frame(i))
    writer.release()
    return path


def split(items: list[Frame | SourceProblem]) -> tuple[list[Frame], list[SourceProblem]]:
    frames = [x for x in items if isinstance(x, Frame)]
    problems = [x for x in items if isinstance(x, SourceProblem)]
    assert len(frames) + len(problems) == len(items)
    return frames, problems


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- parse_source
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0", ("camera", "0")),
        (" 2 ", ("camera", "2")),
        ("camera:1", ("camera", "1")),
        ("rtsp://cam.local:554/live", ("url", "rtsp://cam.local:554/live")),
        ("RTSPS://cam.local/live", ("url", "RTSPS://cam.local/live")),
        ("http://127.0.0.1:8080/video.mjpg", ("url", "http://127.0.0.1:8080/video.mjpg")),
        ("https://example.org/stream", ("url", "https://example.org/stream")),
    ],
)
def test_parse_source_cameras_and_urls(spec: str, expected: tuple[str, str]) -> None:
    assert parse_source(spec) == expected


def test_parse_source_files_by_suffix_and_content(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.jpg"), numbered_frame(1))
    (tmp_path / "clip.mkv").write_bytes(b"whatever")  # suffix decides, content later
    png_named_odd = tmp_path / "snapshot.data"
    cv2.imwrite(str(tmp_path / "tmp.png"), numbered_frame(2))
    png_named_odd.write_bytes((tmp_path / "tmp.png").read_bytes())
    video_named_odd = tmp_path / "recording.bin"
    write_video(tmp_path / "v.avi", "MJPG", n=3)
    video_named_odd.write_bytes((tmp_path / "v.avi").read_bytes())
    (tmp_path / "notes.txt").write_text("not a picture")

    assert parse_source(str(tmp_path)) == ("folder", str(tmp_path))
    assert parse_source(tmp_path / "a.jpg") == ("image", str(tmp_path / "a.jpg"))
    assert parse_source(str(tmp_path / "clip.mkv"))[0] == "video"
    assert parse_source(str(png_named_odd))[0] == "image"
    assert parse_source(str(video_named_odd))[0] == "video"
    with pytest.raises(SourceError, match="not a readable image or video"):
        parse_source(str(tmp_path / "notes.txt"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no source given"),
        ("   ", "no source given"),
        ("ftp://example.org/video.mp4", "unsupported URL scheme 'ftp://'"),
        ("file:///tmp/x.mp4", "unsupported URL scheme 'file://'"),
        ("http://", "names no host"),
        ("/definitely/not/here/clip.mp4", "no such file or folder"),
        ("nul\0byte.mp4", "no such file or folder|not a usable path"),
    ],
)
def test_bad_specs_raise_one_sentence(spec: str, message: str) -> None:
    with pytest.raises(SourceError, match=message) as info:
        open_source(spec)
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text


def test_unsupported_scheme_masks_password() -> None:
    with pytest.raises(SourceError) as info:
        open_source("ftp://bob:s3cret@example.org/v.mp4")
    assert "s3cret" not in str(info.value) and "bob:***@" in str(info.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/live", "rtsp://admin:***@10.0.0.5:554/live"),
        ("rtsp://admin@10.0.0.5/live", "rtsp://admin@10.0.0.5/live"),
        ("http://cam/video?user=a&pwd=xyz", "http://cam/video?user=a&pwd=%2A%2A%2A"),
        ("http://cam/video.mjpg", "http://cam/video.mjpg"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# ---------------------------------------------------------------------------- images
def test_single_image(tmp_path: Path) -> None:
    path = tmp_path / "one.png"
    cv2.imwrite(str(path), numbered_frame(5))
    with open_source(str(path)) as source:
        assert source.kind == "image" and not source.is_live and source.frame_count == 1
        items = list(source)
    frames, problems = split(items)
    assert not problems and len(frames) == 1
    assert frames[0].name == "one.png" and frames[0].index == 0 and frames[0].source == str(path)
    np.testing.assert_array_equal(frames[0].image, numbered_frame(5))


def test_bad_single_image_raises_with_image_error_text(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    with pytest.raises(SourceError, match="not a readable image"):
        open_source(str(path))
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), numbered_frame(0))
    with pytest.raises(SourceError, match="over the limit"):
        open_source(str(big), max_pixels=W * H - 1)


def test_folder_mixed_images(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a_good.jpg"), numbered_frame(1))
    (tmp_path / "b_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage" * 10)
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 0] = 255  # red in RGBA order
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c_rgba.png")
    Image.fromarray(np.full((30, 20), 77, np.uint8), "L").save(tmp_path / "d_gray.png")
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "e_nested.bmp"), numbered_frame(2))
    (tmp_path / "readme.txt").write_text("ignored: not an image suffix")

    with open_source(str(tmp_path)) as source:
        assert source.kind == "folder" and source.frame_count == 5
        items = list(source)
    frames, problems = split(items)
    assert [f.name for f in frames] == [
        "a_good.jpg",
        "c_rgba.png",
        "d_gray.png",
        "sub/e_nested.bmp",
    ]
    assert [f.index for f in frames] == [0, 2, 3, 4]  # the bad file leaves a gap
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
    assert frames[1].image.shape == (40, 50, 3)
    assert frames[1].image[0, 0].tolist() == [0, 0, 255]  # RGBA red -> BGR red
    assert frames[2].image[0, 0].tolist() == [77, 77, 77]
    assert len(problems) == 1
    assert problems[0].name == "b_corrupt.jpg" and "not a readable image" in problems[0].message
    assert items.index(problems[0]) == 1  # in order, and the folder went on after it


def test_folder_over_pixel_limit_is_a_problem_not_an_error(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "small.png"), numbered_frame(0, 10, 10))
    cv2.imwrite(str(tmp_path / "large.png"), numbered_frame(0, 100, 100))
    frames, problems = split(list(open_source(str(tmp_path), max_pixels=1000)))
    assert [f.name for f in frames] == ["small.png"]
    assert (
        len(problems) == 1
        and problems[0].name == "large.png"
        and "over the limit" in problems[0].message
    )


def test_empty_folder_raises(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(SourceError, match="no image files"):
        open_source(str(tmp_path))


# ---------------------------------------------------------------------------- videos
@pytest.mark.parametrize(("fourcc", "suffix"), [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_video_file_frames_in_order(tmp_path: Path, fourcc: str, suffix: str) -> None:
    path = write_video(tmp_path / f"clip{suffix}", fourcc)
    with open_source(str(path)) as source:
        assert source.kind == "video" and not source.is_live
        assert source.fps == pytest.approx(FPS, rel=0.01)
        assert source.frame_count == N_FRAMES
        assert "160x120" in source.description
        items = list(source)
    frames, problems = split(items)
    assert not problems
    assert len(frames) == N_FRAMES
    assert [f.index for f in frames] == list(range(N_FRAMES))
    stamps = np.array([f.timestamp for f in frames])
    assert stamps[0] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(stamps) > 0)
    np.testing.assert_allclose(stamps, np.arange(N_FRAMES) / FPS, atol=0.02)
    # Order: each frame's background brightness encodes its number (lossy codecs: tolerance).
    levels = [float(np.median(f.image[:20])) for f in frames]
    np.testing.assert_allclose(levels, [(i * 7) % 200 for i in range(N_FRAMES)], atol=6)
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.source == str(path) for f in frames)


def test_truncated_avi_ends_early_with_a_problem(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.avi", "MJPG").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full[: len(full) // 2])
    items = list(open_source(str(cut)))
    frames, problems = split(items)
    assert 0 < len(frames) < N_FRAMES - 3
    assert [f.index for f in frames] == list(range(len(frames)))
    assert len(problems) == 1 and items[-1] is problems[0]
    assert "ended early" in problems[0].message and f"of {N_FRAMES} frames" in problems[0].message


def test_truncated_mp4_is_refused_cleanly(tmp_path: Path) -> None:
    # mp4v files keep their index (moov atom) at the end: half a file cannot be opened.
    full = write_video(tmp_path / "full.mp4", "mp4v").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])
    try:
        items = list(open_source(str(cut)))
    except SourceError as exc:
        assert "not a readable video" in str(exc)
    else:  # a backend that can read the first half must then say it ended early
        frames, problems = split(items)
        assert len(frames) < N_FRAMES and problems and "ended early" in problems[-1].message


def test_non_video_named_mp4_raises(tmp_path: Path) -> None:
    path = tmp_path / "fake.mp4"
    path.write_text("this is a text file wearing a video suffix\n" * 20)
    with pytest.raises(SourceError, match="not a readable video"):
        open_source(str(path))


def test_video_frames_over_limit_raise_at_open(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", "MJPG", n=3)
    with pytest.raises(SourceError, match="over the limit"):
        open_source(str(path), max_pixels=W * H - 1)


def test_close_early_releases_and_stops(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", "MJPG")
    source = open_source(str(path))
    it = iter(source)
    first = next(it)
    assert isinstance(first, Frame) and first.index == 0
    source.close()
    source.close()  # twice is fine
    assert list(it) == [] and source.closed


def test_real_video_clip(datasets: Path) -> None:
    path = datasets / "videos" / "short_hamilton_clip.mp4"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    with open_source(str(path)) as source:
        assert source.fps == pytest.approx(30.0, abs=0.1)
        expected = source.frame_count
        assert expected is not None and 265 <= expected <= 285
        count, last_t, shape = 0, -1.0, None
        for item in source:
            assert isinstance(item, Frame), item
            assert item.timestamp > last_t
            last_t, shape = item.timestamp, item.image.shape
            count += 1
    assert count == expected
    assert shape == (360, 640, 3)
    assert last_t == pytest.approx((count - 1) / source.fps, abs=0.1)


# ----------------------------------------------------------------------------- camera
def test_missing_camera_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(SourceError, match="camera 97 not found or busy"):
        open_source("97")
    assert time.monotonic() - start < 5.0


# ------------------------------------------------------------------------ MJPEG server
# The server (tests/mjpeg.py) and its ``mjpeg_server`` fixture (tests/conftest.py) are shared
# with the web app's source tests.


def test_url_stream_reads_reconnects_and_gives_up(
    mjpeg_server: MJPEGServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="maskwatch.sources")
    start = time.monotonic()
    source = open_source(mjpeg_server.url, backoff=(0.05, 0.2), max_retries=3, read_timeout_s=3.0)
    assert isinstance(source, FrameSource)
    assert source.kind == "url" and source.is_live and source.frame_count is None
    with source:
        items = list(source)
    elapsed = time.monotonic() - start
    frames, problems = split(items)
    per = mjpeg_server.frames_per_connection
    # Both connections' frames arrive (FFMPEG may drop a final frame at a cut).
    assert 2 * per - 2 <= len(frames) <= 2 * per
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.image.shape == (H, W, 3) and f.source == mjpeg_server.url for f in frames)
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps) and stamps[0] >= 0.0
    # Frames from the second connection were served after the reconnection.
    levels = [float(np.median(f.image[:20])) for f in frames]
    assert levels[0] == pytest.approx((10 * 7) % 200, abs=6)
    assert levels[-1] == pytest.approx(((20 + per - 1) * 7) % 200, abs=6) or levels[
        -1
    ] == pytest.approx(((20 + per - 2) * 7) % 200, abs=6)
    assert mjpeg_server.served == 2
    # Gave up after three failed attempts (503) with one final problem.
    assert len(problems) == 1 and items[-1] is problems[0]
    assert "gave up after 3 reconnection attempts" in problems[0].message
    messages = [r.getMessage() for r in caplog.records]
    url = mjpeg_server.url
    assert f"lost stream {url}; reconnecting in 0.05 s (attempt 1)" in messages
    assert any(m.startswith(f"reconnected to {url}") for m in messages)
    # Back-off doubles up to the longest wait: 0.05, 0.1, 0.2 after the second drop.
    assert f"lost stream {url}; reconnecting in 0.1 s (attempt 2)" in messages
    assert f"lost stream {url}; reconnecting in 0.2 s (attempt 3)" in messages
    assert elapsed < 15.0


def test_a_lost_url_says_it_is_reconnecting_until_it_is_back() -> None:
    with MJPEGServer(frames_per_connection=None, connections=None, interval_s=0.02) as server:
        source = open_source(server.url, backoff=(0.1, 0.2), read_timeout_s=3.0)
        seen: list[int] = []
        reader = threading.Thread(target=lambda: seen.extend(1 for _ in source), daemon=True)
        reader.start()
        assert source.reconnecting == ""
        server.go_down()
        deadline = time.monotonic() + 10
        while not source.reconnecting and time.monotonic() < deadline:
            time.sleep(0.02)
        assert source.reconnecting.startswith(f"lost stream {server.url}; reconnecting in ")
        assert "(attempt " in source.reconnecting
        down = len(seen)
        server.come_back()
        deadline = time.monotonic() + 10
        while (source.reconnecting or len(seen) <= down) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert source.reconnecting == "" and len(seen) > down
        source.close()
        reader.join(5)


def test_url_without_reconnect_stops_after_the_drop(mjpeg_server: MJPEGServer) -> None:
    with open_source(mjpeg_server.url, reconnect=False, read_timeout_s=3.0) as source:
        frames, problems = split(list(source))
    assert 1 <= len(frames) <= mjpeg_server.frames_per_connection
    assert len(problems) == 1 and "not reconnecting" in problems[0].message
    assert mjpeg_server.served == 1


def test_url_close_from_another_thread_stops_a_reconnect_wait() -> None:
    with MJPEGServer(frames_per_connection=2, connections=1) as server:
        source = open_source(server.url, backoff=(5.0, 5.0), read_timeout_s=3.0)
        timer = threading.Timer(0.5, source.close)
        timer.start()
        start = time.monotonic()
        items = list(source)  # would wait 5 s per attempt, forever, without close()
        timer.join()
    assert time.monotonic() - start < 4.0
    assert all(isinstance(x, Frame) for x in items)


def test_url_frames_over_limit_raise_at_open(mjpeg_server: MJPEGServer) -> None:
    with pytest.raises(SourceError, match="over the limit"):
        open_source(mjpeg_server.url, max_pixels=W * H - 1, read_timeout_s=3.0)


def test_unreachable_url_fails_fast_with_password_masked() -> None:
    port = free_port()
    url = f"http://viewer:topsecret@127.0.0.1:{port}/stream"
    start = time.monotonic()
    with pytest.raises(SourceError) as info:
        open_source(url, read_timeout_s=2.0)
    assert time.monotonic() - start < 5.0
    text = str(info.value)
    assert f"http://viewer:***@127.0.0.1:{port}/stream" in text
    assert "topsecret" not in text


def test_url_that_hangs_times_out() -> None:
    """A server that accepts the connection but never answers must not hang the open."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        start = time.monotonic()
        with pytest.raises(SourceError, match="cannot open stream|sent no frame"):
            open_source(f"http://127.0.0.1:{listener.getsockname()[1]}/stream", read_timeout_s=1.0)
        assert time.monotonic() - start < 5.0
    finally:
        listener.close()


class FakeCapture:
    """Stands in for ``cv2.VideoCapture(int)``: plays a script of frames, then fails."""

    def __init__(self, frames: list[np.ndarray]):
        self.frames = list(frames)
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.frames:
            return True, self.frames.pop(0)
        return False, None

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.released = True


def test_live_frames_over_limit_are_refused_mid_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """FFMPEG rescales MJPEG frames to the first size, so a fake camera drives this guard."""
    small, big = numbered_frame(1), numbered_frame(2, 2 * W, 2 * H)
    gray = np.full((H, W), 9, np.uint8)
    captures: list[FakeCapture] = []

    def fake_capture(*args: object) -> FakeCapture:
        assert args == (0,)
        captures.append(FakeCapture([small, big, gray]))
        return captures[-1]

    monkeypatch.setattr(cv2, "VideoCapture", fake_capture)
    with open_source("0", max_pixels=W * H, reconnect=False) as source:
        assert (
            source.kind == "camera"
            and source.fps == 30.0
            and source.description == "camera 0 (160x120, 30 fps)"
        )
        items = list(source)
    assert [type(x).__name__ for x in items] == ["Frame", "SourceProblem", "Frame", "SourceProblem"]
    assert items[0].source == "camera:0" and items[0].index == 0
    assert "frame 1 refused" in items[1].message and "320x240" in items[1].message
    assert items[2].index == 2 and items[2].image.shape == (H, W, 3)  # gray -> BGR
    assert items[2].image[0, 0].tolist() == [9, 9, 9]
    assert items[0].timestamp <= items[2].timestamp
    assert "not reconnecting" in items[3].message
    assert len(captures) == 1 and captures[0].released
