"""HTML pages: live view, people, events dashboard; their forms post here."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from maskwatch.gallery import GalleryError
from maskwatch.web.api import Name, SourceId, enrol_uploads, person_dict
from maskwatch.web.deps import (
    check_form_csrf,
    render,
    require_admin_page,
    require_viewer_page,
    service,
)
from maskwatch.web.sources import SourceRefused
from maskwatch.web.uploads import UploadError

router = APIRouter(include_in_schema=False)


def _back(path: str, *, msg: str = "", err: str = "") -> RedirectResponse:
    query = f"?msg={quote(msg)}" if msg else f"?err={quote(err)}" if err else ""
    return RedirectResponse(path + query, status_code=303)


def _flash(request: Request) -> dict[str, str]:
    return {"msg": request.query_params.get("msg", "")[:300],
            "err": request.query_params.get("err", "")[:300]}


@router.get("/", dependencies=[Depends(require_viewer_page)])
async def live_page(request: Request) -> Response:
    sources = request.app.state.sources.list()
    return render(request, "live.html", {"sources": sources, **_flash(request)})


@router.get("/people", dependencies=[Depends(require_admin_page)])
async def people_page(request: Request) -> Response:
    try:
        people = await asyncio.to_thread(service(request).gallery.list_people, thumbnails=True)
        error = ""
    except GalleryError as exc:
        people, error = [], str(exc)
    flash = _flash(request)
    flash["err"] = flash["err"] or error
    return render(request, "people.html", {"people": [person_dict(p) for p in people], **flash})


@router.post("/people", dependencies=[Depends(require_admin_page)])
async def enrol_form(request: Request) -> Response:
    form = await check_form_csrf(request)
    name = form.get("name")
    files = [f for f in form.getlist("photos") if hasattr(f, "read") and getattr(f, "filename", "")]
    if not isinstance(name, str) or not name.strip():
        return _back("/people", err="Give the person's name.")
    try:
        res = await enrol_uploads(request, name, files, add=form.get("add") == "on",
                                  thumbnail=form.get("thumbnail") == "on")
    except (UploadError, GalleryError) as exc:
        return _back("/people", err=str(exc))
    except HTTPException as exc:
        return _back("/people", err=str(exc.detail))
    verb = "Enrolled" if res.created else "Updated"
    return _back("/people", msg=f"{verb} {res.person.name}: {res.photos} photo(s), "
                                f"{res.templates} templates.")


@router.post("/people/{name}/rename", dependencies=[Depends(require_admin_page)])
async def rename_form(request: Request, name: Name) -> Response:
    form = await check_form_csrf(request)
    new = form.get("new_name")
    try:
        p = await asyncio.to_thread(service(request).gallery.rename, name,
                                    new if isinstance(new, str) else "")
    except GalleryError as exc:
        return _back("/people", err=str(exc))
    service(request).people_changed()
    return _back("/people", msg=f"Renamed {name} to {p.name}.")


@router.post("/people/{name}/delete", dependencies=[Depends(require_admin_page)])
async def delete_form(request: Request, name: Name) -> Response:
    form = await check_form_csrf(request)
    if form.get("confirm") != name:
        return _back("/people", err=f"Not deleted: type the name {name!r} to confirm.")
    try:
        n = await asyncio.to_thread(service(request).gallery.remove_person, name)
    except GalleryError as exc:
        return _back("/people", err=str(exc))
    service(request).people_changed()
    return _back("/people", msg=f"Deleted {name}, their {n} templates and their events.")


@router.get("/events", dependencies=[Depends(require_admin_page)])
async def events_page(request: Request) -> Response:
    return render(request, "events.html",
                  {"retention_days": request.app.state.settings.retention_days})


@router.post("/sources", dependencies=[Depends(require_admin_page)])
async def add_source_form(request: Request) -> Response:
    form = await check_form_csrf(request)
    spec = form.get("spec")
    try:
        src = await asyncio.to_thread(request.app.state.sources.add,
                                      spec if isinstance(spec, str) else "")
    except SourceRefused as exc:
        return _back("/", err=str(exc))
    return _back("/", msg=f"Source {src.id} added: {src.shown}.")


@router.post("/sources/{source_id}/delete", dependencies=[Depends(require_admin_page)])
async def remove_source_form(request: Request, source_id: SourceId) -> Response:
    await check_form_csrf(request)
    ok = await asyncio.to_thread(request.app.state.sources.remove, source_id)
    return (_back("/", msg=f"Source {source_id} removed.") if ok
            else _back("/", err=f"No source {source_id}."))
