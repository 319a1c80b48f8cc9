"""The REST API under ``/api`` (documented by OpenAPI at ``/docs``).

Open (read-only, for localhost use): health, analyze, the list of server sources.
Admin only (session cookie + ``X-CSRF-Token``, or ``Authorization: Bearer``): people,
events, statistics, adding and removing sources.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from maskwatch import __version__
from maskwatch.events import UNCLASSIFIED, events_to_csv
from maskwatch.gallery import Person, validate_name
from maskwatch.types import SHOWN_MASK_STATES
from maskwatch.validation import MAX_NAME_CHARS, MAX_SOURCE_CHARS
from maskwatch.web.deps import require_admin, require_viewer, service
from maskwatch.web.responses import (
    AUTH,
    BODY,
    OPEN,
    STORE,
    UPLOAD,
    CSVResponse,
    JPEGResponse,
    errors,
    merge,
)
from maskwatch.web.sources import SourceRefused
from maskwatch.web.uploads import decode_upload, read_limited

router = APIRouter(prefix="/api", tags=["api"])
admin = [Depends(require_admin)]
viewer = [Depends(require_viewer)]  # open on localhost; the admin login when the server is private

#: Values of the ``mask_state`` filter: the classes, ``unknown`` (the face could not be
#: judged) and ``unclassified`` (never classified).
MASK_STATES = (*SHOWN_MASK_STATES, UNCLASSIFIED)

# -- bounds of every parameter: out of range is a 422 before any work ------------------------

#: Latest time a filter may name, Unix seconds (1e11 is the year 5138): keeps every bound a
#: finite float the stores compare exactly, and refuses the 1e308s and infinities of typos.
MAX_TIME_S = 1e11
#: Largest ``offset`` of a page of events: far past any store this app fills, and within
#: SQLite's and MongoDB's 64-bit integers (2**63 overflowed SQLite: a 500 before).
MAX_OFFSET = 10**9
#: Longest name accepted in a path, query or body, in characters, before validation: room for
#: decomposed accents (NFC shortens them) and surrounding spaces; the name rules then apply.
MAX_NAME_ARG = 4 * MAX_NAME_CHARS
#: Longest server source id in a path (ids are small numbers).
MAX_SOURCE_ID = 64
#: Longest server source spec (camera number or URL) in a request body.
MAX_SPEC_CHARS = 2000

Time = Annotated[float | None, Query(ge=0, le=MAX_TIME_S, allow_inf_nan=False,
                                     description="Unix seconds (0 to 1e11)")]
BucketSeconds = Annotated[float, Query(ge=1, le=86400 * 31, allow_inf_nan=False,
                                       description="seconds per bucket (1 s to 31 days)")]
SourceFilter = Annotated[str | None, Query(max_length=MAX_SOURCE_CHARS,
                                           description="only events of this source")]
Identity = Annotated[str | None, Query(max_length=MAX_NAME_ARG,
                                       description='a name, or "" for unknown faces')]
# an enum in the schema, so that clients (and the fuzz run) know the values
MaskState = Annotated[Literal[(*MASK_STATES, "")] | None,  # type: ignore[valid-type]
                      Query(description='a mask state; "unknown": the face could not be '
                            'judged; "" or "unclassified": never classified')]
Name = Annotated[str, Path(min_length=1, max_length=MAX_NAME_ARG, description="the person's name")]
SourceId = Annotated[str, Path(min_length=1, max_length=MAX_SOURCE_ID,
                               description="a server source's id")]


class NewName(BaseModel):
    """Body of a rename."""

    name: str = Field(min_length=1, max_length=MAX_NAME_ARG, examples=["Ann B"])


class NewSource(BaseModel):
    """Body of a new server source."""

    spec: str = Field(min_length=1, max_length=MAX_SPEC_CHARS, examples=["rtsp://cam/live", "0"],
                      description="a camera number or an rtsp:// or http(s):// URL")


#: Error answers of each kind of route (see :mod:`maskwatch.web.responses`).
R_ADMIN_READ = merge(AUTH, STORE)
R_ADMIN_WRITE = merge(AUTH, BODY, STORE)
R_UPLOAD = merge(AUTH, BODY, UPLOAD)
R_ENROL = merge(AUTH, BODY, STORE, UPLOAD, errors(409))


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
        images.append(await decode_upload(data, name=name, max_bytes=s.max_upload_bytes,
                                          max_pixels=s.max_pixels))
    return images


async def enrol_uploads(request: Request, name: str, files: list[UploadFile], *, add: bool = False,
                        thumbnail: bool = False) -> Any:
    """Validate the name and photos, then enrol: the gallery reads and writes on a worker
    thread (a locked SQLite file makes only this request wait), the models on the
    inference thread (see :meth:`EngineService.enrol`)."""
    clean = validate_name(name)
    images = await decode_uploads(request, files)
    return await asyncio.to_thread(service(request).enrol, clean, images, add=add,
                                   thumbnail=thumbnail)


def _filters(since: float | None, until: float | None, source: str | None, identity: str | None,
             mask_state: str | None) -> dict[str, Any]:
    if mask_state is not None and mask_state not in (*MASK_STATES, ""):
        raise HTTPException(422, "bad request: query.mask_state: must be one of "
                                 + ", ".join(MASK_STATES))
    return {"since": since, "until": until, "source": source or None, "identity": identity,
            "mask_state": mask_state or None}


# -- open routes -------------------------------------------------------------------


@router.get("/health", summary="Server health", responses=OPEN)
async def health(request: Request) -> dict[str, Any]:
    svc = service(request)
    return {"status": "ok", "version": __version__, "uptime_s": round(time.time() - svc.started, 1),
            "live_streams": svc.stream_count, "events": True,
            "embedder": request.app.state.settings.embedder}


@router.post("/analyze", dependencies=viewer, responses=R_UPLOAD,
             summary="Analyse one photo (accurate mode); returns the engine JSON")
async def analyze(request: Request,
                  file: Annotated[UploadFile, File(description="JPEG, PNG, WEBP, GIF, BMP or TIFF")]
                  ) -> dict[str, Any]:
    s = request.app.state.settings
    data = await read_limited(file, s.max_upload_bytes)
    image = await decode_upload(data, name=(file.filename or "upload")[-100:],
                                max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels)
    return await service(request).run(service(request).analyze_photo, image)


@router.get("/sources", dependencies=viewer, responses=AUTH,
            summary="Server-side sources and their state")
async def list_sources(request: Request) -> list[dict[str, Any]]:
    return [dict(vars(i), stream=f"/stream/{i.id}.mjpg") for i in request.app.state.sources.list()]


@router.get("/sources/{source_id}/result", dependencies=viewer,
            responses=merge(AUTH, errors(404)),
            summary="Engine JSON of a server source's latest frame")
async def source_result(request: Request, source_id: SourceId) -> dict[str, Any]:
    src = request.app.state.sources.get(source_id)
    if src is None:
        raise HTTPException(404, f"no source {source_id!r}")
    if src.latest is None:
        raise HTTPException(404, f"source {source_id} has no frame yet ({src.state})")
    return dict(src.latest, source_id=source_id)


# -- people ------------------------------------------------------------------------


@router.get("/people", dependencies=admin, responses=R_ADMIN_READ,
            summary="Everyone enrolled, with template counts")
async def list_people(request: Request) -> list[dict[str, Any]]:
    people = await asyncio.to_thread(service(request).gallery.list_people, thumbnails=True)
    return [person_dict(p) for p in people]


@router.post("/people", dependencies=admin, status_code=201, responses=R_ENROL,
             summary="Enrol a person from photos")
async def add_person(request: Request, name: Annotated[str, Form(max_length=MAX_NAME_ARG)],
                     photos: Annotated[list[UploadFile], File()],
                     thumbnail: Annotated[bool, Form()] = False,
                     add: Annotated[bool, Form(description="add to an existing person")] = False
                     ) -> dict[str, Any]:
    res = await enrol_uploads(request, name, photos, add=add, thumbnail=thumbnail)
    return {"person": person_dict(res.person), "photos": res.photos, "templates": res.templates,
            "synthetic_templates": res.synthetic_templates, "created": res.created}


@router.get("/people/{name}", dependencies=admin, responses=R_ADMIN_READ, summary="One person")
async def get_person(request: Request, name: Name) -> dict[str, Any]:
    return person_dict(await asyncio.to_thread(service(request).gallery.get_person, name))


@router.get("/people/{name}/thumbnail", dependencies=admin, responses=R_ADMIN_READ,
            response_class=JPEGResponse, summary="The person's face thumbnail (if kept)")
async def thumbnail(request: Request, name: Name) -> Response:
    p = await asyncio.to_thread(service(request).gallery.get_person, name)
    if not p.thumbnail:
        raise HTTPException(404, f"no thumbnail is kept for {p.name!r}")
    return Response(p.thumbnail, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.patch("/people/{name}", dependencies=admin, responses=merge(R_ADMIN_WRITE, errors(409)),
              summary="Rename a person")
async def rename_person(request: Request, name: Name, body: NewName) -> dict[str, Any]:
    p = await asyncio.to_thread(service(request).gallery.rename, name, body.name)
    service(request).people_changed()
    return person_dict(p)


@router.delete("/people/{name}", dependencies=admin, responses=R_ADMIN_WRITE,
               summary="Delete a person and everything about them")
async def delete_person(request: Request, name: Name) -> dict[str, Any]:
    n = await asyncio.to_thread(service(request).gallery.remove_person, name)
    service(request).people_changed()
    return {"removed": validate_name(name, existing=True), "templates": n}


@router.post("/people/{name}/photos", dependencies=admin, responses=R_ENROL,
             summary="Add photos to an enrolled person")
async def add_photos(request: Request, name: Name,
                     photos: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
    await asyncio.to_thread(service(request).gallery.get_person, name)  # 404 before any work
    res = await enrol_uploads(request, name, photos, add=True)
    return {"person": person_dict(res.person), "photos": res.photos, "templates": res.templates}


# -- events and statistics -------------------------------------------------------------


@router.get("/events", dependencies=admin, responses=R_ADMIN_READ,
            summary="Events (one per face track), filtered and paged")
async def events(request: Request, since: Time = None, until: Time = None,
                 source: SourceFilter = None, identity: Identity = None,
                 mask_state: MaskState = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
    f = _filters(since, until, source, identity, mask_state)
    page, total = await asyncio.to_thread(service(request).gallery.query_events, **f,
                                          limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "events": [e.to_dict() for e in page]}


@router.get("/events.csv", dependencies=admin, responses=R_ADMIN_READ, response_class=CSVResponse,
            summary="Events as CSV (same filters, no paging)")
async def events_csv(request: Request, since: Time = None, until: Time = None,
                     source: SourceFilter = None, identity: Identity = None,
                     mask_state: MaskState = None) -> StreamingResponse:
    f = _filters(since, until, source, identity, mask_state)
    buf = io.StringIO()
    await asyncio.to_thread(events_to_csv, service(request).gallery.iter_events(**f), buf)
    return StreamingResponse(iter([buf.getvalue()]), media_type="text/csv",
                             headers={"Content-Disposition":
                                      'attachment; filename="maskwatch-events.csv"'})


@router.get("/stats", dependencies=admin, responses=R_ADMIN_READ,
            summary="Mask compliance, people seen, unknown faces, per time bucket")
async def stats(request: Request, since: Time = None, until: Time = None,
                source: SourceFilter = None, bucket_s: BucketSeconds = 3600) -> dict[str, Any]:
    out = await asyncio.to_thread(service(request).gallery.event_stats, since=since, until=until,
                                  source=source or None, bucket_s=bucket_s)
    out["sources"] = await asyncio.to_thread(service(request).gallery.event_sources)
    return out


# -- sources ---------------------------------------------------------------------------


@router.post("/sources", dependencies=admin, status_code=201, responses=merge(AUTH, BODY),
             summary="Add a server-side camera or URL")
async def add_source(request: Request, body: NewSource) -> dict[str, Any]:
    try:
        src = request.app.state.sources.add(body.spec)
    except SourceRefused as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return dict(vars(src.info()), stream=f"/stream/{src.id}.mjpg")


@router.delete("/sources/{source_id}", dependencies=admin, responses=merge(AUTH, errors(404)),
               summary="Stop and remove a server-side source")
async def remove_source(request: Request, source_id: SourceId) -> dict[str, Any]:
    ok = await asyncio.to_thread(request.app.state.sources.remove, source_id)
    if not ok:
        raise HTTPException(404, f"no source {source_id!r}")
    return {"removed": source_id}
