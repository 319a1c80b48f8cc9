"""The model runtimes write nothing under the user's home: onnxruntime's telemetry keeps a
device id and an event database under ``~/.cache``, and importing OpenVINO writes a client
id under ``~/intel`` (and queues a usage event) unless maskwatch turns both off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Loads every model of the runtime (both detectors, the mask classifier, SFace on each
#: backend) and runs each once on a real photo.
SCRIPT = """
import sys
import cv2
from maskwatch.models.detector import SSDDetector, YuNetDetector
from maskwatch.models.embedder import SFaceEmbedder
from maskwatch.models.mask_classifier import MaskClassifier

image = cv2.imread(sys.argv[1])
assert image is not None
SSDDetector().detect(image)
faces = YuNetDetector().detect(image)
assert len(faces) > 0
MaskClassifier().classify(image, faces)
for backend in ("openvino", "onnxruntime", "opencv"):
    assert SFaceEmbedder(backend=backend).embed(image, faces).shape == (len(faces), 128)
print("ran")
"""


def test_no_model_runtime_writes_under_home(tmp_path, datasets):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           # the switches that would turn telemetry off from outside: maskwatch must do it itself
           if k not in ("ORT_DISABLE_TELEMETRY", "CI", "TF_BUILD", "JENKINS_URL")
           and not k.startswith("XDG_")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local" / "share"),
               PYTHONPATH=str(REPO / "src"))
    photo = datasets / "group-photos" / "t1.jpg"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(photo)], env=env, cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ran" in out.stdout, out.stderr[-3000:]
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert written == [], written


def test_turning_telemetry_off_keeps_an_explicit_choice(monkeypatch):
    pytest.importorskip("onnxruntime")
    from maskwatch.models._ort import quiet_runtime_telemetry

    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "0")
    quiet_runtime_telemetry()
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "0"  # a user who opts in is not overruled
    monkeypatch.delenv("ORT_DISABLE_TELEMETRY")
    quiet_runtime_telemetry()
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "1"
