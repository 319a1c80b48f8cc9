import cv2
import numpy as np
import pytest

from maskwatch.ops.y4m import write_y4m


def test_y4m_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = [np.full((48, 64, 3), (10 * i, 100, 200), np.uint8) for i in range(5)]
    frames[2] = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / "clip.y4m"
    assert write_y4m(frames, path, fps=25) == 5
    data = path.read_bytes()
    assert data.startswith(b"YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C420jpeg\n")
    assert data.count(b"FRAME\n") == 5
    assert (len(data)
            == len(b"YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C420jpeg\n") + 5 * (6 + 64 * 48 * 3 // 2))
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read()
    cap.release()
    if ok:  # OpenCV's FFmpeg reads y4m: colours survive 4:2:0 within a few levels
        assert np.abs(first.astype(int) - frames[0].astype(int)).mean() < 4


@pytest.mark.parametrize("frames, message", [
    ([], "no frames"),
    ([np.zeros((5, 8, 3), np.uint8)], "even"),
    ([np.zeros((4, 8, 3), np.uint8), np.zeros((6, 8, 3), np.uint8)], "frame 1"),
])
def test_y4m_refuses(tmp_path, frames, message):
    with pytest.raises(ValueError, match=message):
        write_y4m(frames, tmp_path / "x.y4m")
