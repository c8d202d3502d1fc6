"""The error types that cross the bot/model boundary.

A ``RequestError`` is the caller's fault: it carries an HTTP status (4xx), a stable machine-readable ``code`` and a
message that says what to change.  Anything else raised while serving is *our* failure and becomes a 5xx whose
traceback goes to the log, never into the response.
"""

from __future__ import annotations


class RequestError(ValueError):
    """A bad request: rendered as ``{"error": {"code": ..., "message": ...}}`` with ``status``."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


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
