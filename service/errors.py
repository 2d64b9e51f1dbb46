"""The service's error vocabulary: one base carrying an HTTP status, subclasses composing messages.

Deep code (decoding, the data plane, the batcher, the store) raises these; ``app.py`` maps them to a
response in one handler, in the v1 body ``{"error": {"code", "message"}}`` or the v2 body
``{"error": "..."}``. Nothing else in the service chooses a status code.
"""

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from models.errors import GGAUserError


class ServiceError(GGAUserError):
    """Base of every error the service answers with a 4xx or 5xx.

    Attributes:
        status: The HTTP status of the response.
        code: A stable machine-readable code for the v1 body.
        headers: Extra response headers (``Retry-After``).
    """

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    code: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInput(ServiceError, ValueError):
    """The request is well-formed HTTP but its content cannot be used (422)."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "invalid_input"


class InvalidImage(InvalidInput):
    """An uploaded image cannot be decoded or converted to the model's input."""

    code = "invalid_image"

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"image {index}: {reason}")


class InvalidTensor(InvalidInput):
    """A tensor input has the wrong shape, type or values."""

    code = "invalid_tensor"


class InvalidJSON(InvalidInput):
    """The body is not valid JSON, or not the JSON object the endpoint expects."""

    code = "invalid_json"


class PayloadTooLarge(ServiceError, ValueError):
    """The body, the number of images, or one image's pixel count is over a limit (413)."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


class BodyTooLarge(PayloadTooLarge):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"request body exceeds {limit} bytes; send fewer or smaller images per request "
            "(the limit is GGA_MAX_BODY_BYTES)"
        )


class TooManyImages(PayloadTooLarge):
    def __init__(self, count: int | None, limit: int) -> None:
        sent = f"{count} images" if count is not None else f"more than {limit + 1} images"
        super().__init__(
            f"{sent} in one request, at most {limit} allowed; split the request "
            "(the limit is GGA_MAX_IMAGES_PER_REQUEST)"
        )


class TooManyPixels(PayloadTooLarge):
    def __init__(self, index: int, pixels: int, limit: int) -> None:
        super().__init__(
            f"image {index} has {pixels} pixels, at most {limit} allowed "
            "(the limit is GGA_MAX_PIXELS)"
        )


class UnsupportedMediaType(ServiceError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"

    def __init__(self, content_type: str, accepted: str) -> None:
        super().__init__(
            f"content type {content_type or 'none'!r} is not accepted; send {accepted}"
        )


class ModelNotFound(ServiceError, LookupError):
    status = HTTPStatus.NOT_FOUND
    code = "model_not_found"

    def __init__(self, name: str, available: list[str]) -> None:
        known = ", ".join(available) or "none"
        super().__init__(f"model {name!r} is not served here; available: {known}")


class PredictionNotFound(ServiceError, LookupError):
    status = HTTPStatus.NOT_FOUND
    code = "prediction_not_found"

    def __init__(self, prediction_id: str) -> None:
        super().__init__(f"no prediction with id {prediction_id!r}")


class KeyNotFound(ServiceError, LookupError):
    status = HTTPStatus.NOT_FOUND
    code = "key_not_found"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no active API key with id {key_id!r}; see GET /v1/keys")


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"

    def __init__(self) -> None:
        super().__init__("the cursor is not one this service issued; start again without it")


class ModelNotReady(ServiceError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "model_not_ready"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"model {name!r} is not ready (loading, or stopped while this request was read); "
            "retry shortly",
            headers={"Retry-After": "1"},
        )


class QueueFull(ServiceError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "queue_full"

    def __init__(self, name: str, capacity: int, retry_after_s: int = 1) -> None:
        super().__init__(
            f"model {name!r} has {capacity} images queued, its limit; retry after "
            f"{retry_after_s} s (the limit is GGA_QUEUE_SIZE)",
            headers={"Retry-After": str(retry_after_s)},
        )


class Overloaded(ServiceError):
    """Refused before decoding: the server holds more of the model's requests than it answers in
    time (``GGA_QUEUE_BUDGET_S``)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "overloaded"

    def __init__(self, name: str, in_flight: int, budget_s: float) -> None:
        super().__init__(
            f"model {name!r} is overloaded: the server holds {in_flight} of its requests, as many "
            f"as it answers within {budget_s:g} s (GGA_QUEUE_BUDGET_S); retry after 1 s",
            headers={"Retry-After": "1"},
        )


class StoreUnavailable(ServiceError):
    """The result store cannot be reached; nothing was stored (or read).

    Args:
        reason: What failed (the driver's error class).
        writing: Whether the request was saving predictions (its message then says nothing was
            stored); False for reads, statistics and key checks.
    """

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "store_unavailable"

    def __init__(self, reason: str, *, writing: bool = True) -> None:
        if writing:
            message = (
                f"the result store could not save the prediction ({reason}); nothing was stored, "
                "retry later"
            )
        else:
            message = f"the result store cannot be reached ({reason}); retry later"
        super().__init__(message, headers={"Retry-After": "5"})


class StoreRejected(ServiceError):
    """The store refused this request's rows (the other requests of its batch were stored)."""

    code = "store_rejected"

    def __init__(self, reason: str) -> None:
        super().__init__(f"the result store refused this request's predictions ({reason})")


class DeadlineExceeded(ServiceError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "deadline_exceeded"

    def __init__(self, name: str, timeout_s: float) -> None:
        super().__init__(
            f"model {name!r} could not answer within {timeout_s:g} s; nothing was stored, "
            "retry later (the limit is GGA_REQUEST_TIMEOUT_S)",
            headers={"Retry-After": "1"},
        )


class ShuttingDown(ServiceError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "shutting_down"

    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down; retry on another instance", headers={"Retry-After": "1"}
        )


class Unauthorized(ServiceError):
    status = HTTPStatus.UNAUTHORIZED
    code = "unauthorized"

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
            "(create one with `gga keys create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )


class Forbidden(ServiceError):
    """The caller is known but may not do this (403); the message says who may."""

    status = HTTPStatus.FORBIDDEN
    code = "forbidden"


class ScopeTooNarrow(Forbidden):
    def __init__(self, scope: str, action: str, needed: str) -> None:
        super().__init__(
            f"this API key has the {str(scope)!r} scope, which may not {action}; use a key with "
            f"the {needed} scope (`gga keys create NAME --scope ...`)"
        )


class ModelControlDisabled(Forbidden):
    """Repository control (load, unload) is off: ``GGA_MODEL_CONTROL=none``, the default."""

    code = "model_control_disabled"

    def __init__(self) -> None:
        super().__init__(
            "loading and unloading models is disabled on this server; restart it with "
            "GGA_MODEL_CONTROL=explicit and call with an admin key "
            "(`gga keys create NAME --scope admin`)"
        )


class RateLimited(ServiceError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "rate_limited"

    def __init__(self, retry_after_s: int, message: str = "") -> None:
        super().__init__(
            message
            or f"rate limit exceeded (per API key, or per client address without keys); retry "
            f"after {retry_after_s} s (the limit is GGA_RATE_LIMIT)",
            headers={"Retry-After": str(retry_after_s)},
        )


class TooManyInFlight(RateLimited):
    """One caller already has as many requests in the server as it may."""

    code = "too_many_in_flight"

    def __init__(self, limit: int) -> None:
        super().__init__(
            1,
            f"this caller (API key, or client address without keys) already has {limit} "
            "requests in the server; wait for an answer before sending more, retry after 1 s "
            "(the limit is GGA_CALLER_CONCURRENCY)",
        )


class ServiceStarting(ServiceError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "starting"

    def __init__(self) -> None:
        super().__init__(
            "the service is still starting (store migration, model loading); retry shortly",
            headers={"Retry-After": "1"},
        )


def validation_message(errors: Sequence[Mapping[str, Any]], where: str) -> str:
    """pydantic's first validation error as ``"field.path: message"``.

    Args:
        errors: ``ValidationError.errors()`` or ``RequestValidationError.errors()``.
        where: What to name when the error has no location (the whole body).

    Returns:
        One line for an ``InvalidInput`` message; the client fixes one error at a time.
    """
    first = errors[0] if errors else {"msg": "invalid"}
    path = ".".join(str(part) for part in first.get("loc", ())) or where
    return f"{path}: {first.get('msg')}"
