"""Settings of the web app: one object, built by ``maskwatch serve`` or by tests."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskwatch.config import DEFAULT_MAX_PIXELS, DEFAULT_RETENTION_DAYS


def default_home() -> Path:
    """The maskwatch data folder: where the default gallery and the admin secret live.

    ``$MASKWATCH_HOME`` when set, else ``$XDG_DATA_HOME/maskwatch`` (``~/.local/share``).
    """
    from maskwatch.gallery import default_gallery_path

    return default_gallery_path().parent


def is_loopback(host: str) -> bool:
    """True for an address that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[] ")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass
class WebSettings:
    """Everything the server needs to know.

    Attributes:
        host, port: where uvicorn listens (localhost by default).
        db: gallery and events store, as for ``--db`` (None: the default SQLite file).
        sources: server-side sources analysed at start (camera index, video file, URL).
        home: data folder for the admin password hash and the session key
            (default: :func:`default_home`).
        admin_password: sets the admin password (default: ``$MASKWATCH_ADMIN_PASSWORD``;
            when neither is given and none is stored, one is generated and printed once).
        max_upload_bytes: largest accepted upload, bytes per file.
        max_upload_files: most photos in one enrolment.
        max_pixels: largest accepted image or frame, width x height.
        retention_days: events older than this are deleted.
        embedder: face embedder for recognition and enrolment, ``"sface"`` or
            ``"dlib"`` (dlib's ResNet from face_recognition; needs the ``[dlib]`` extra).
            Templates of one embedder are never matched against another's.
        masked_faces: what embeds faces wearing a mask with SFace: ``"student"`` (the
            shipped student of SFace, matched against SFace's templates) or ``"sface"``
            (SFace itself, against its masked templates).
        threshold, masked_threshold: recognition thresholds (cosine similarity; None:
            the ones calibrated for ``embedder``).
        max_live_clients: live WebSocket sessions served at once; more are refused.
        session_hours: how long a login lasts.
        login_attempts, login_window_s: failed logins allowed per client address
            within the window (seconds; the form, Bearer tokens on routes and on the
            WebSocket counted together) before every further attempt gets 429, the
            right password included.
        https: mark cookies Secure (None: when the request came over https).
        private: watching needs the admin login too: the live page and its WebSocket,
            server streams, the source list and ``/api/analyze``, which show faces and
            names. None (default): private whenever the server listens beyond this
            machine (``host`` is not a loopback address), open on localhost.
        allowed_hosts: names accepted in the ``Host`` header besides the localhost names
            and ``host`` (see :meth:`allowed_host_names`); ``"*"`` accepts any. A page of
            another site that makes its own name resolve to this machine (DNS
            rebinding) sends its own name, so it is refused.
        cluster: run the server sources on a Dask cluster: ``tcp://HOST:PORT`` or
            ``local[:N]`` (see :mod:`maskwatch.cluster`); None: on this machine.
        quality: the quality rule's thresholds, as
            :class:`~maskwatch.engine.EngineSettings` fields (``min_luma``,
            ``min_sharpness``, ``min_face_size``); those not given keep its defaults.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    db: str | None = None
    sources: list[str] = field(default_factory=list)
    home: Path | None = None
    admin_password: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_files: int = 20
    max_pixels: int = DEFAULT_MAX_PIXELS
    retention_days: float = DEFAULT_RETENTION_DAYS
    embedder: str = "sface"
    masked_faces: str = "student"
    threshold: float | None = None
    masked_threshold: float | None = None
    max_live_clients: int = 16
    session_hours: float = 12.0
    login_attempts: int = 5
    login_window_s: float = 300.0
    https: bool | None = None
    private: bool | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    cluster: str | None = None
    quality: dict[str, float] = field(default_factory=dict)

    def engine_settings(self, **overrides: Any) -> Any:
        """The :class:`~maskwatch.engine.EngineSettings` of this server's live analysis
        (``overrides`` replace fields)."""
        from maskwatch.engine import EngineSettings

        base: dict[str, Any] = dict(
            mode="live", db=self.db or "default", embedder=self.embedder,
            masked_faces=self.masked_faces, threshold=self.threshold,
            masked_threshold=self.masked_threshold, retention_days=self.retention_days,
            max_pixels=self.max_pixels, **self.quality)
        base.update(overrides)
        return EngineSettings(**base)

    def resolved_home(self) -> Path:
        return Path(self.home).expanduser() if self.home else default_home()

    def watching_needs_login(self) -> bool:
        """Whether the pages and routes that show faces and names need the login."""
        if self.private is not None:
            return self.private
        return not is_loopback(self.host)

    def allowed_host_names(self) -> frozenset[str] | None:
        """Host names (lower case, IPv6 in brackets, no port) this server answers to, or
        None for any (``"*"`` in :attr:`allowed_hosts`).

        Always ``localhost``, ``127.0.0.1`` and ``[::1]``; also ``host`` unless it is the
        wildcard ``0.0.0.0`` or ``::`` (a client never names those); then every name of
        :attr:`allowed_hosts`. Any port is accepted.
        """
        extra = [h.strip().lower() for h in self.allowed_hosts]
        if "*" in extra:
            return None
        names = {"localhost", "127.0.0.1", "[::1]"}
        for h in (self.host.strip().lower(), *extra):
            if h and h not in ("0.0.0.0", "::", "[::]"):
                names.add(f"[{h}]" if ":" in h and not h.startswith("[") else h)
        return frozenset(names)

    def resolved_thresholds(self, embedder: Any = None) -> tuple[float, float]:
        """``(threshold, masked_threshold)``: the ones given, else those calibrated for
        the engine embedder ``embedder`` (None: for :attr:`embedder` alone)."""
        from maskwatch.models.embedder import default_thresholds, engine_thresholds

        thr, mthr = (default_thresholds(self.embedder) if embedder is None
                     else engine_thresholds(self.embedder, embedder))
        return (thr if self.threshold is None else self.threshold,
                mthr if self.masked_threshold is None else self.masked_threshold)

    def resolved_admin_password(self) -> str | None:
        return self.admin_password or os.environ.get("MASKWATCH_ADMIN_PASSWORD") or None
