"""The one error taxonomy of the domain.

Every error the domain raises on purpose derives from :class:`PermanentError` (retrying the same
call cannot help: a broken image, a missing blob, a malformed event) or :class:`TransientError`
(the same call may succeed later: a store, a broker or blob storage unreachable). The workers file
per-image errors by these two bases, and the HTTP layer maps each concrete type to a status in one
table (``api/errors.py``). Neither base subclasses ``ValueError``: an unforeseen ``ValueError`` from
a library is a programming error, and must never be filed as a bad upload.
"""

from __future__ import annotations


class ImageSearchError(Exception):
    """Base of every error the domain raises on purpose."""


class PermanentError(ImageSearchError):
    """Retrying cannot help: the input or the state it names is wrong."""


class TransientError(ImageSearchError):
    """A dependency is unreachable or busy: the same call may succeed later."""


class ConfigurationError(ImageSearchError):
    """The settings cannot work together (found at start-up, not per request)."""


class InvalidInput(PermanentError):
    """A value the caller gave cannot be used (the message says which and why)."""


class NotFound(PermanentError):
    """The thing a request names does not exist."""


class Conflict(PermanentError):
    """The request is valid but the state it needs is not there yet (or no longer)."""


class TooLarge(PermanentError):
    """More bytes or pixels than the limits allow."""
