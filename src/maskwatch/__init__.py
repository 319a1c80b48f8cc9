"""maskwatch: find faces, tell whether each person wears a mask, and who they are.

Public entry points live in their modules (``maskwatch.models.detector``,
``maskwatch.models.mask_classifier``, ``maskwatch.types``); importing this package
imports nothing heavy.
"""

__version__ = "0.1.0"
