"""Settings shared by the command line and the web app: each default is set here once.

Recognition thresholds are SFace cosine similarities (-1..1; higher is stricter), set by
``maskwatch evaluate --task recognition`` on LFW: the lowest values that named at most
0.5% of probes of 53 people not enrolled. With the masked-face student (the engine's
default), masked probes held out from that calibration: 0.94% of strangers named, 93.9%
of known people named right (docs/results/recognition.md).
"""

from __future__ import annotations

#: Limit on decoded pixels (width * height), for files and uploads alike: a 40-megapixel
#: photo (at most 7 bytes a pixel while decoding: under 300 MB).
DEFAULT_MAX_PIXELS = 40_000_000
#: Events older than this many days are deleted (the store's retention).
DEFAULT_RETENTION_DAYS = 30.0
#: Faces darker than this mean luma (0-255) are shown as "cannot judge" (the quality
#: rule's default, :data:`maskwatch.ops.quality.DEFAULT_RULE`, where it is explained).
DEFAULT_MIN_LUMA = 8.0

#: Operating threshold for unmasked probes (cosine similarity).
DEFAULT_THRESHOLD = 0.422
#: Operating threshold for masked probes embedded by the masked-face student and matched
#: against plain templates (``maskwatch evaluate --task recognition --embedder FILE``).
STUDENT_MASKED_THRESHOLD = 0.449
#: Operating threshold for masked probes, matched against masked templates.
DEFAULT_MASKED_THRESHOLD = 0.500
