"""Peak resident memory of the engine alone, on the shared video.

Runs the live engine (YuNet, mask classifier, tracker, SFace, a 1,000-template
matcher) over ``videos/short_hamilton_clip.mp4`` in this process and prints the
peak RSS. ``maskwatch bench``'s own peak also counts its baseline's res10 SSD +
MobileNetV2-224 model.

    python benchmarks/bench_memory.py [--datasets ../shared/datasets]
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path

import numpy as np

from maskwatch.models.embedder import SFaceEmbedder
from maskwatch.pipeline import Pipeline, PipelineConfig
from maskwatch.recognition import EmbeddingMatcher
from maskwatch.sources import Frame, open_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets",
                    default=str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    matcher = EmbeddingMatcher.from_arrays([f"p{i // 10}" for i in range(1000)],
                                           rng.normal(size=(1000, 128)).astype(np.float32))
    engine = Pipeline(PipelineConfig(), embedder=SFaceEmbedder(), matcher=matcher)
    frames = 0
    with open_source(str(Path(args.datasets) / "videos" / "short_hamilton_clip.mp4")) as src:
        for item in src:
            if isinstance(item, Frame):
                engine.process(item.image, item.index, item.timestamp)
                frames += 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{frames} frames through the live engine with recognition; "
          f"peak resident memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
