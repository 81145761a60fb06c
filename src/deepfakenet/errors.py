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


class JobRefused(DeepFakeNetError):
    """An expected condition stops a command-line job: exit code 2 and one line, no traceback.

    See :mod:`deepfakenet.cli`. Raise a subclass for conditions a user causes and can fix (no
    champion yet, a bad data tree, a typo in the config), never for a bug or an outage.
    """


class JobLockedError(DeepFakeNetError):
    """Another run holds the job's lock (exit code 75): try again later."""


class ConfigError(JobRefused):
    """A job's config has an unknown key or a value out of range."""


class DatasetError(JobRefused):
    """The data tree is missing, empty, or lacks one of the classes."""


class RegistryError(JobRefused):
    """A registered model, version or alias that was asked for does not exist.

    Only a genuine "not found" becomes this error; any other registry failure (a tracking
    server's 5xx, a timeout) stays an :class:`mlflow.exceptions.MlflowException`, so that jobs
    fail closed instead of reading an outage as "no champion".
    """


class NotFoundError(DeepFakeNetError):
    """A record that was asked for by id does not exist (HTTP 404)."""


class InvalidFeedbackError(DeepFakeNetError):
    """Feedback that cannot be stored as sent: unknown label, comment too long (HTTP 400)."""


class DataLeakError(DatasetError):
    """An evaluation protocol found held-out images (a family or a source) in train or val."""


class InvalidVideoError(InvalidImageError):
    """The bytes are not a decodable video, or the video breaks a configured limit.

    A subclass of :class:`InvalidImageError`: the service answers 4xx with ``str(error)``, so the
    message must say what is wrong in words a client can act on.
    """


class VideoTooLargeError(InvalidVideoError, ImageTooLargeError):
    """The upload is over the byte limit or its frames over the pixel limit (HTTP 413)."""
