"""Checks of what is handed to the stores: person names and events.

Pure functions over values (no store, no I/O) that raise the gallery's errors
(:mod:`maskwatch.errors`). The stores (:mod:`maskwatch.gallery`) run them on every
write, and the event writer (:mod:`maskwatch.events`) runs :func:`check_events` before
it buffers an event, so that one malformed event is logged and left out rather than
refused by the store with its whole batch for ever. :mod:`maskwatch.gallery` re-exports
:func:`validate_name`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable

from maskwatch.errors import GalleryError, InvalidName
from maskwatch.records import Event
from maskwatch.types import SHOWN_MASK_STATES

#: Longest allowed person name, in characters (after stripping).
MAX_NAME_CHARS = 100
#: Characters refused in names: they break file names, URLs and shells.
FORBIDDEN_NAME_CHARS = '/\\:*?"<>|'
#: Longest event source text, in characters.
MAX_SOURCE_CHARS = 500
#: Characters that render as nothing but are not format characters (category Cf), so that
#: "Ann" and "Ann" + one of them would look the same: the Hangul fillers, the blank Braille
#: pattern, the combining grapheme joiner, Khmer inherent vowels and Mongolian variation
#: selectors (from Unicode's Default_Ignorable_Code_Point; U+2800 is not in it but is blank).
INVISIBLE_NAME_CHARS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5"
                                 "\u180b\u180c\u180d\u180f")
#: Scripts whose letters join, where a zero-width non-joiner between two letters is spelling
#: (Persian names such as U+0639 U+0644 U+06CC U+200C U+0631 U+0636 U+0627): Arabic, Syriac,
#: Arabic Supplement, Thaana, N'Ko, Arabic Extended and the Arabic presentation forms.
_JOINING_SCRIPTS = ((0x0600, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))


def _joining_letter(c: str) -> bool:
    return (unicodedata.category(c).startswith("L")
            and any(lo <= ord(c) <= hi for lo, hi in _JOINING_SCRIPTS))


def _invisible(clean: str, i: int) -> bool:
    """Whether ``clean[i]`` is a character a name may not hold: format (Cf: zero-width,
    direction marks, embeddings, overrides and isolates, BOM, tags, soft hyphen), private
    use, unassigned, variation selectors or :data:`INVISIBLE_NAME_CHARS`.

    The zero-width joiners are spelling in some scripts, so they are allowed where the
    IDNA rules (RFC 5892, CONTEXTJ) allow them: after a virama (Indic conjuncts), and a
    non-joiner between two letters of a joining script (Arabic, Persian, Syriac).
    """
    c = clean[i]
    if c in ("\u200c", "\u200d"):
        before = clean[i - 1] if i > 0 else ""
        after = clean[i + 1] if i + 1 < len(clean) else ""
        if before and unicodedata.combining(before) == 9:  # a virama
            return False
        joins = bool(before and after) and _joining_letter(before) and _joining_letter(after)
        return not (c == "\u200c" and joins)
    if c in INVISIBLE_NAME_CHARS or "\ufe00" <= c <= "\ufe0f" or "\U000e0100" <= c <= "\U000e01ef":
        return True
    return unicodedata.category(c) in ("Cf", "Co", "Cn")


def validate_name(name: object, *, existing: bool = False) -> str:
    """The cleaned person name, or :class:`InvalidName` saying what is wrong.

    Cleaning: Unicode NFC normalisation and stripping of surrounding white space.
    Refused: empty names, more than :data:`MAX_NAME_CHARS` characters, any of
    ``/ \\ : * ? " < > |``, control characters, ``.`` and ``..``; and characters that
    cannot be seen or that turn text around (see :func:`_invisible`), so that two
    people's names never look the same: ``Ann`` and ``Ann`` + a zero-width space, or a
    name hiding a right-to-left override. Names are case-sensitive: ``Ann`` and ``ann``
    are two people.

    Args:
        name: the name as given.
        existing: the name of someone who may already be enrolled (a lookup, a rename's
            old name, a removal, an event's identity): only the rules that held before
            invisible characters were refused apply, so a gallery written earlier that
            holds such a name can still find, rename and delete that person. New names
            (enrolment, a rename's new name, an import) use the full rules.
    """
    if not isinstance(name, str):
        raise InvalidName(f"a person's name must be text, not {type(name).__name__}")
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean:
        raise InvalidName("a person's name cannot be empty")
    if len(clean) > MAX_NAME_CHARS:
        raise InvalidName(f"a person's name can have at most {MAX_NAME_CHARS} characters, "
                          f"this one has {len(clean)}")
    bad = sorted({c for c in clean if c in FORBIDDEN_NAME_CHARS})
    if bad:
        raise InvalidName(f"the name {clean!r} contains {' '.join(bad)}; "
                          f"names cannot contain any of {' '.join(FORBIDDEN_NAME_CHARS)}")
    if any(unicodedata.category(c) in ("Cc", "Cs") or c in "\u2028\u2029" for c in clean):
        raise InvalidName(f"the name {clean!r} contains control characters")
    if clean in (".", ".."):
        raise InvalidName(f"{clean!r} cannot be used as a name")
    if not existing:
        hidden = list(dict.fromkeys(c for i, c in enumerate(clean) if _invisible(clean, i)))
        if hidden:
            what = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, '(unassigned)')}"
                             for c in hidden[:3])
            raise InvalidName(f"the name {clean!r} contains {what}: names cannot hold invisible, "
                              "direction or unassigned characters")
    return clean


def check_events(events: Iterable[Event]) -> list[Event]:
    """Validated copies of events (names cleaned); :class:`GalleryError` names the bad one."""
    out: list[Event] = []
    for e in events:
        if not isinstance(e, Event):
            raise GalleryError(f"expected an Event, got {type(e).__name__}")
        where = f"event {e.id!r}"
        if not isinstance(e.id, str) or not re.fullmatch(r"[0-9a-f]{32}", e.id):
            raise GalleryError(f"{where}: an event id must be 32 lowercase hex characters "
                               "(uuid4 hex)")
        if (not isinstance(e.source, str) or not e.source.strip()
                or len(e.source) > MAX_SOURCE_CHARS):
            raise GalleryError(f"{where}: the source must be text of 1 to {MAX_SOURCE_CHARS} "
                               "characters")
        try:
            started, ended = float(e.started), float(e.ended)
            track_id, frames = int(e.track_id), int(e.frames)
            sim = None if e.best_similarity is None else float(e.best_similarity)
            counts = {str(k): int(v) for k, v in dict(e.mask_frames or {}).items()}
        except (TypeError, ValueError) as exc:
            raise GalleryError(f"{where}: malformed ({exc})") from exc
        if not (math.isfinite(started) and math.isfinite(ended)) or started > ended:
            raise GalleryError(f"{where}: started and ended must be finite Unix seconds, "
                               "started <= ended")
        if frames < 0 or track_id < 0 or any(v < 0 for v in counts.values()):
            raise GalleryError(f"{where}: frame counts and the track id cannot be negative")
        bad = sorted(set(counts) - set(SHOWN_MASK_STATES))
        if bad:
            raise GalleryError(f"{where}: unknown mask states in mask_frames: {', '.join(bad)}")
        if e.mask_state is not None and e.mask_state not in SHOWN_MASK_STATES:
            raise GalleryError(f"{where}: unknown mask state {e.mask_state!r}")
        if sim is not None and not math.isfinite(sim):
            raise GalleryError(f"{where}: best_similarity must be a finite number or None")
        identity = None if e.identity in (None, "") else validate_name(e.identity, existing=True)
        out.append(Event(e.id, e.source.strip(), track_id, started, ended, frames, e.mask_state,
                         {k: counts.get(k, 0) for k in SHOWN_MASK_STATES}, identity, sim))
    return out
