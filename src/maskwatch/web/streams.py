"""MJPEG streams of the server's sources (``/stream/{id}.mjpg``): annotated JPEG frames
in a multipart/x-mixed-replace response, which any browser shows as video."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from maskwatch.web.api import SourceId
from maskwatch.web.deps import require_viewer
from maskwatch.web.responses import AUTH, JPEGResponse, MJPEGResponse, errors, merge

router = APIRouter(tags=["streams"])

BOUNDARY = "maskwatchframe"
#: How often (seconds) a viewer looks for a new frame.
POLL_S = 0.02


def _source(request: Request, source_id: str):  # noqa: ANN202
    src = request.app.state.sources.get(source_id)
    if src is None:
        raise HTTPException(404, f"no source {source_id!r}")
    return src


#: Error answers of the stream routes: no such source (or no frame yet), and the login of a
#: private server.
RESPONSES = merge(AUTH, errors(404))


@router.get("/stream/{source_id}.mjpg", dependencies=[Depends(require_viewer)], responses=RESPONSES,
            response_class=MJPEGResponse, summary="Annotated MJPEG stream of a server source")
async def mjpeg(request: Request, source_id: SourceId) -> StreamingResponse:
    src = _source(request, source_id)

    async def frames() -> AsyncIterator[bytes]:
        seen = 0
        while not await request.is_disconnected():
            # Polling keeps viewers off the thread pool: any number of them cost no thread.
            index, jpeg = src.jpeg_index, src.jpeg
            if jpeg is None or index == seen:
                if src.state in ("finished", "failed", "stopped") and index == seen:
                    return
                await asyncio.sleep(POLL_S)
                continue
            seen = index
            yield (b"--" + BOUNDARY.encode() + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                   + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")

    return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-store"})


@router.get("/stream/{source_id}.jpg", dependencies=[Depends(require_viewer)], responses=RESPONSES,
            response_class=JPEGResponse, summary="Latest annotated frame of a server source")
async def snapshot(request: Request, source_id: SourceId) -> Response:
    src = _source(request, source_id)
    if src.jpeg is None:
        raise HTTPException(404, f"source {source_id} has no frame yet ({src.state})")
    return Response(src.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
