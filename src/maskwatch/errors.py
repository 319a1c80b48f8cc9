"""The errors of sources, of the gallery and of enrolment, in a module that imports nothing of ours.

Every store, the event writer and the front ends catch these, so they sit below all of
them (:mod:`maskwatch.gallery` re-exports them). Each message is one clear sentence that
a user can act on: the CLI prints it, the web app answers it with a 4xx or 503.
"""

from __future__ import annotations


class GalleryError(Exception):
    """A gallery operation that cannot be done; the message is one clear sentence."""


class GalleryUnavailable(GalleryError):
    """The store cannot be reached (server down, wrong host, file locked too long)."""


class PersonExists(GalleryError):
    """A person of that name is already enrolled."""


class PersonNotFound(GalleryError):
    """No person of that name is enrolled."""


class InvalidName(GalleryError):
    """A person name that is empty, too long or holds forbidden characters."""


class EnrolError(GalleryError):
    """An enrolment refused before anything was written (one clear sentence)."""


class SourceError(Exception):
    """A source (file, folder, camera, URL) as a whole cannot be opened; ``str(error)``
    is one clear sentence."""


class ClusterError(Exception):
    """Work cannot be run on the cluster asked for (Dask missing, a malformed address,
    a scheduler that does not answer); the message is one clear sentence."""
