"""maskwatch: find faces, tell whether each person wears a mask, and who they are.

The public API is :class:`Engine` (with :class:`EngineSettings`)::

    from maskwatch import Engine

    result = Engine().analyze("photo.jpg")          # one photo: faces, mask states
    with Engine(db="people.sqlite3") as engine:     # a video, recognising enrolled people
        for frame in engine.run("clip.mp4"):
            print(frame.frame_index, frame.faces.mask_labels, frame.faces.names)

Importing this package imports nothing heavy: the engine's module (and the models) load
on first use of these names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Engine", "EngineSettings", "FrameResult", "Faces", "__version__"]

if TYPE_CHECKING:
    from maskwatch.engine import Engine, EngineSettings
    from maskwatch.pipeline import FrameResult
    from maskwatch.types import Faces

_LAZY = {"Engine": "maskwatch.engine", "EngineSettings": "maskwatch.engine",
         "FrameResult": "maskwatch.pipeline", "Faces": "maskwatch.types"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'maskwatch' has no attribute {name!r}")
