"""The REST API under ``/api`` (documented by OpenAPI at ``/docs``).

Open (read-only, for localhost use): health, analyze, the list of server sources.
Admin only (session cookie + ``X-CSRF-Token``, or ``Authorization: Bearer``): people,
events, statistics, adding and removing sources.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse

from maskwatch import __version__
from maskwatch.events import UNCLASSIFIED, events_to_csv
from maskwatch.gallery import Person, validate_name
from maskwatch.types import MASK_CLASSES
from maskwatch.web.deps import require_admin, require_viewer, service
from maskwatch.web.sources import SourceRefused
from maskwatch.web.uploads import check_image, read_limited

router = APIRouter(prefix="/api", tags=["api"])
admin = [Depends(require_admin)]
viewer = [Depends(require_viewer)]  # open on localhost; the admin login when the server is private

MASK_STATES = (*MASK_CLASSES, UNCLASSIFIED)


def person_dict(p: Person) -> dict[str, Any]:
    from urllib.parse import quote

    return {"name": p.name, "id": p.person_id, "created": p.created, "templates": p.templates,
            "synthetic_templates": p.synthetic_templates,
            "thumbnail": f"/api/people/{quote(p.name, safe='')}/thumbnail" if p.thumbnail else None}


async def decode_uploads(request: Request, files: list[UploadFile]) -> list[Any]:
    """Every uploaded photo checked and decoded (or one clear 4xx for the first bad one)."""
    s = request.app.state.settings
    files = [f for f in files if f is not None]
    if not files:
        raise HTTPException(400, "no photo uploaded")
    if len(files) > s.max_upload_files:
        raise HTTPException(413, f"at most {s.max_upload_files} photos at once")
    images = []
    for i, f in enumerate(files):
        data = await read_limited(f, s.max_upload_bytes)
        name = (f.filename or f"photo {i + 1}")[-100:]
        images.append(await asyncio.to_thread(check_image, data, name=name, max_bytes=s.max_upload_bytes,
                                              max_pixels=s.max_pixels))
    return images


async def enrol_uploads(request: Request, name: str, files: list[UploadFile], *, add: bool = False,
                        thumbnail: bool = False) -> Any:
    """Validate the name and photos, then enrol on the inference thread."""
    clean = validate_name(name)
    images = await decode_uploads(request, files)
    return await service(request).run(lambda: service(request).enrol(clean, images, add=add, thumbnail=thumbnail))


def _filters(since: float | None, until: float | None, source: str | None, identity: str | None,
             mask_state: str | None) -> dict[str, Any]:
    if mask_state is not None and mask_state not in (*MASK_STATES, ""):
        raise HTTPException(422, f"mask_state must be one of {', '.join(MASK_STATES)}")
    return {"since": since, "until": until, "source": source or None, "identity": identity,
            "mask_state": mask_state or None}


# -- open routes -------------------------------------------------------------------


@router.get("/health", summary="Server health")
async def health(request: Request) -> dict[str, Any]:
    svc = service(request)
    return {"status": "ok", "version": __version__, "uptime_s": round(time.time() - svc.started, 1),
            "live_streams": svc.stream_count, "events": True,
            "embedder": request.app.state.settings.embedder}


@router.post("/analyze", dependencies=viewer, summary="Analyse one photo (accurate mode); returns the engine JSON")
async def analyze(request: Request, file: Annotated[UploadFile, File(description="JPEG, PNG, WEBP, GIF, BMP or TIFF")]
                  ) -> dict[str, Any]:
    s = request.app.state.settings
    data = await read_limited(file, s.max_upload_bytes)
    image = await asyncio.to_thread(check_image, data, name=(file.filename or "upload")[-100:],
                                    max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels)
    return await service(request).run(service(request).analyze_photo, image)


@router.get("/sources", dependencies=viewer, summary="Server-side sources and their state")
async def list_sources(request: Request) -> list[dict[str, Any]]:
    return [dict(vars(i), stream=f"/stream/{i.id}.mjpg") for i in request.app.state.sources.list()]


# -- people ------------------------------------------------------------------------


@router.get("/people", dependencies=admin, summary="Everyone enrolled, with template counts")
async def list_people(request: Request) -> list[dict[str, Any]]:
    people = await asyncio.to_thread(service(request).gallery.list_people, thumbnails=True)
    return [person_dict(p) for p in people]


@router.post("/people", dependencies=admin, status_code=201, summary="Enrol a person from photos")
async def add_person(request: Request, name: Annotated[str, Form()], photos: Annotated[list[UploadFile], File()],
                     thumbnail: Annotated[bool, Form()] = False,
                     add: Annotated[bool, Form(description="add to an existing person")] = False) -> dict[str, Any]:
    res = await enrol_uploads(request, name, photos, add=add, thumbnail=thumbnail)
    return {"person": person_dict(res.person), "photos": res.photos, "templates": res.templates,
            "synthetic_templates": res.synthetic_templates, "created": res.created}


@router.get("/people/{name}", dependencies=admin, summary="One person")
async def get_person(request: Request, name: str) -> dict[str, Any]:
    return person_dict(await asyncio.to_thread(service(request).gallery.get_person, name))


@router.get("/people/{name}/thumbnail", dependencies=admin, summary="The person's face thumbnail (if kept)")
async def thumbnail(request: Request, name: str) -> Response:
    p = await asyncio.to_thread(service(request).gallery.get_person, name)
    if not p.thumbnail:
        raise HTTPException(404, f"no thumbnail is kept for {p.name!r}")
    return Response(p.thumbnail, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.patch("/people/{name}", dependencies=admin, summary="Rename a person")
async def rename_person(request: Request, name: str,
                        body: Annotated[dict[str, Any], Body(examples=[{"name": "Ann B"}])]) -> dict[str, Any]:
    new = body.get("name")
    if not isinstance(new, str):
        raise HTTPException(422, 'send {"name": "new name"}')
    p = await asyncio.to_thread(service(request).gallery.rename, name, new)
    service(request).people_changed()
    return person_dict(p)


@router.delete("/people/{name}", dependencies=admin, summary="Delete a person and everything about them")
async def delete_person(request: Request, name: str) -> dict[str, Any]:
    n = await asyncio.to_thread(service(request).gallery.remove_person, name)
    service(request).people_changed()
    return {"removed": validate_name(name), "templates": n}


@router.post("/people/{name}/photos", dependencies=admin, summary="Add photos to an enrolled person")
async def add_photos(request: Request, name: str, photos: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
    await asyncio.to_thread(service(request).gallery.get_person, name)  # 404 before any work
    res = await enrol_uploads(request, name, photos, add=True)
    return {"person": person_dict(res.person), "photos": res.photos, "templates": res.templates}


# -- events and statistics -------------------------------------------------------------


@router.get("/events", dependencies=admin, summary="Events (one per face track), filtered and paged")
async def events(request: Request, since: float | None = Query(None, description="unix seconds"),
                 until: float | None = Query(None, description="unix seconds"), source: str | None = None,
                 identity: str | None = Query(None, description='a name, or "" for unknown faces'),
                 mask_state: str | None = None, limit: int = Query(50, ge=1, le=500),
                 offset: int = Query(0, ge=0)) -> dict[str, Any]:
    f = _filters(since, until, source, identity, mask_state)
    page, total = await asyncio.to_thread(service(request).gallery.query_events, **f, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "events": [e.to_dict() for e in page]}


@router.get("/events.csv", dependencies=admin, summary="Events as CSV (same filters, no paging)")
async def events_csv(request: Request, since: float | None = None, until: float | None = None,
                     source: str | None = None, identity: str | None = None,
                     mask_state: str | None = None) -> StreamingResponse:
    f = _filters(since, until, source, identity, mask_state)
    buf = io.StringIO()
    await asyncio.to_thread(events_to_csv, service(request).gallery.iter_events(**f), buf)
    return StreamingResponse(iter([buf.getvalue()]), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="maskwatch-events.csv"'})


@router.get("/stats", dependencies=admin, summary="Mask compliance, people seen, unknown faces, per time bucket")
async def stats(request: Request, since: float | None = None, until: float | None = None, source: str | None = None,
                bucket_s: float = Query(3600, ge=1, le=86400 * 31)) -> dict[str, Any]:
    out = await asyncio.to_thread(service(request).gallery.event_stats, since=since, until=until,
                                  source=source or None, bucket_s=bucket_s)
    out["sources"] = await asyncio.to_thread(service(request).gallery.event_sources)
    return out


# -- sources ---------------------------------------------------------------------------


@router.post("/sources", dependencies=admin, status_code=201, summary="Add a server-side camera or URL")
async def add_source(request: Request,
                     body: Annotated[dict[str, Any], Body(examples=[{"spec": "rtsp://cam/live"}])]) -> dict[str, Any]:
    spec = body.get("spec")
    if not isinstance(spec, str):
        raise HTTPException(422, 'send {"spec": "0" or "rtsp://..."}')
    try:
        src = request.app.state.sources.add(spec)
    except SourceRefused as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return dict(vars(src.info()), stream=f"/stream/{src.id}.mjpg")


@router.delete("/sources/{source_id}", dependencies=admin, summary="Stop and remove a server-side source")
async def remove_source(request: Request, source_id: str) -> dict[str, Any]:
    ok = await asyncio.to_thread(request.app.state.sources.remove, source_id)
    if not ok:
        raise HTTPException(404, f"no source {source_id!r}")
    return {"removed": source_id}
