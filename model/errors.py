"""The error types that cross the bot/model boundary.

A ``RequestError`` is the caller's fault: it carries an HTTP status (4xx), a stable machine-readable ``code`` and a
message that says what to change.  Anything else raised while serving is *our* failure and becomes a 5xx whose
traceback goes to the log, never into the response.

Every error answer is the same JSON, whatever HTTP status the serving stack puts on it (the Hugging Face toolkit
answers every exception with 400)::

    {"error": {"code": "unknown_look", "message": "…", "retryable": false}}

``retryable`` tells the caller whether sending the same request again can succeed (a crash or "still loading":
yes; a bad request: no).  Callers decide from the body, not from the status.
"""

from __future__ import annotations


def error_body(code: str, message: str, retryable: bool = False) -> dict:
    """The one shape of every error answer."""
    return {"error": {"code": code, "message": message, "retryable": retryable}}


class RequestError(ValueError):
    """A bad request: rendered as ``{"error": {"code": ..., "message": ..., "retryable": false}}`` with ``status``."""

    status = 400
    code = "bad_request"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict:
        return error_body(self.code, self.message, self.retryable)


class ClientGone(Exception):
    """The caller closed the connection while its request was being computed: the work stops."""


class ErrorReply(Exception):
    """Raised by ``transform_fn`` under the Hugging Face toolkit for a non-200 answer: its ``str`` is our JSON
    error body, which the toolkit passes on as the message of its own (always 400) error."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(body.decode("utf-8", "replace"))
        self.status = status
        self.body = body


class InvalidImage(RequestError):
    code = "invalid_image"


class ImageTooLarge(RequestError):
    status = 413
    code = "image_too_large"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    status = 415
    code = "unsupported_media_type"


class NotAcceptable(RequestError):
    status = 406
    code = "not_acceptable"


class AlreadyFullResolution(RequestError):
    """The garment region is no larger than the size it was generated at: upscaling it would add nothing."""

    status = 422
    code = "already_full_resolution"
