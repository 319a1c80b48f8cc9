"""What the routes answer, as the OpenAPI schema documents it.

Every error answer of the app, whoever gives it (a route, an exception handler, the
request guards, the body limit), is one JSON object ``{"detail": "one sentence"}``:
:class:`Problem`. Routes list the error codes they can give with :func:`errors`; the
shared tables below keep that short. Responses that are not JSON get a response class
whose media type the schema shows (CSV, JPEG, MJPEG).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field


class Problem(BaseModel):
    """The body of every error answer (4xx, 503)."""

    detail: str = Field(description="what is wrong, in one sentence",
                        examples=["no person named 'Ann' is enrolled"])


#: What each error code means in this app.
DESCRIPTIONS: dict[int, str] = {
    400: "Bad request: a Host header this server does not answer to, no photo, an empty "
         "file, or a filter the store cannot use",
    401: "No admin session cookie or `Authorization: Bearer <admin password>`, or a wrong one",
    403: "A cookie session without its CSRF token, or a cross-site request from a browser",
    404: "Not found",
    409: "A person of that name is already enrolled",
    413: "The request body, a file or an image (pixels) is larger than the limit",
    415: "Not an image (checked from the content): JPEG, PNG, WEBP, GIF, BMP or TIFF expected",
    422: "Bad request: a parameter out of range or of the wrong type, a bad name, a corrupt "
         "image, a photo without a face (`bad request: <where>: <what>` for parameters)",
    429: "Too many failed attempts with the admin password from this address; wait and retry",
    503: "The gallery or event store cannot be reached right now",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for error codes, each with the :class:`Problem` body."""
    return {code: {"model": Problem, "description": DESCRIPTIONS[code]} for code in codes}


def merge(*tables: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """Several ``responses=`` tables as one (later ones win)."""
    out: dict[int | str, dict[str, Any]] = {}
    for t in tables:
        out.update(t)
    return out


# Shared tables, one per kind of route. Every route can get 400 (Host not allowed) and
# 422 (a parameter out of range); a body can always be too large (413) and a browser's
# cross-site write is refused (403).
#: Open routes (no credentials ever needed).
OPEN = errors(400, 422)
#: Routes that need the admin, or the admin on a private server (the "viewer" routes).
AUTH = errors(400, 401, 403, 422, 429)
#: Routes that take a request body.
BODY = errors(403, 413)
#: Routes that read the gallery or the event store.
STORE = errors(400, 404, 503)
#: Routes that take uploaded photos.
UPLOAD = errors(400, 413, 415, 422)


class CSVResponse(Response):
    """A CSV document (for the schema: ``text/csv``)."""

    media_type = "text/csv"


class JPEGResponse(Response):
    """A JPEG image (for the schema: ``image/jpeg``)."""

    media_type = "image/jpeg"


class MJPEGResponse(StreamingResponse):
    """An endless MJPEG stream (for the schema: ``multipart/x-mixed-replace``)."""

    media_type = "multipart/x-mixed-replace"


def problem_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with every error answer (4xx, 5xx) of every operation described
    as what the app really sends: :class:`Problem` as JSON.

    Two things differ from FastAPI's own document: its 422 (``HTTPValidationError``, a
    list of errors) is the app's one-sentence Problem (the app's handler replaces it), and
    FastAPI gives the error answers of a route the route's own media type (a thumbnail's
    404 would be ``image/jpeg``), whereas they are all JSON.
    """
    ref = {"$ref": "#/components/schemas/Problem"}
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            for code, resp in op.get("responses", {}).items():
                if code[:1] in "45":
                    resp["content"] = {"application/json": {"schema": dict(ref)}}
                    if resp.get("description") == "Validation Error":
                        resp["description"] = DESCRIPTIONS[422]
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("Problem", Problem.model_json_schema())
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema
