"""Named exceptions, so callers (CLI, HTTP service) can map each failure to a clear message."""

from __future__ import annotations


class DeepFakeNetError(Exception):
    """Base class for every error the library raises on purpose."""


class InvalidImageError(DeepFakeNetError):
    """The bytes are not a decodable image, or the image breaks a configured limit.

    The service turns this into an HTTP 4xx with ``str(error)`` as the reason, so the message
    must say what is wrong in words a client can act on.
    """


class ImageTooLargeError(InvalidImageError):
    """The upload is over the byte limit or the decoded image over the pixel limit."""


class DatasetError(DeepFakeNetError):
    """The data tree is missing, empty, or lacks one of the classes."""


class RegistryError(DeepFakeNetError):
    """A registered model, version or alias that was asked for does not exist."""


class NotFoundError(DeepFakeNetError):
    """A record that was asked for by id does not exist (HTTP 404)."""


class InvalidFeedbackError(DeepFakeNetError):
    """Feedback that cannot be stored as sent: unknown label, comment too long (HTTP 400)."""


class DataLeakError(DatasetError):
    """An evaluation protocol found held-out images (a family or a source) in train or val."""
