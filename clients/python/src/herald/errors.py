"""Typed exceptions: one class per Herald publish-API error code, grouped by status family.

Backend code can catch as broadly or as narrowly as it needs (``HeraldError`` for
everything, ``ClientError`` for "my request is wrong", ``IdempotencyKeyReusedError`` for one
code) instead of parsing JSON error bodies.
"""

from __future__ import annotations

from typing import Any


class HeraldError(Exception):
    """Base of every error this package raises.

    ``code`` is Herald's error code (``"unknown_channel"``) or, for errors raised on this
    side, a code of the same style (``"connection_error"``); ``status`` is the HTTP status,
    or ``None`` when no response was received.
    """

    default_code = "herald_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class InvalidMessageError(HeraldError, ValueError):
    """A message refused before sending: wrong field types, data not JSON, bad key."""

    default_code = "invalid_message"


class ConfigurationError(HeraldError, ValueError):
    """A publisher or channel-layer setting that cannot work (bad URL, bad mapping)."""

    default_code = "configuration_error"


class TransportError(HeraldError):
    """No usable HTTP response: connection refused or reset, timeout, or a reply that is
    not Herald's (after the retries, when the failure was retryable)."""

    default_code = "connection_error"


class APIError(HeraldError):
    """Herald answered with an error status. ``retryable`` says whether a retry with the
    same idempotency key may succeed."""

    retryable = False


class ClientError(APIError):
    """4xx: the request is wrong; resending it unchanged fails again (except 429)."""


class BadRequestError(ClientError):
    default_code = "bad_request"


class InvalidIdempotencyKeyError(BadRequestError):
    default_code = "invalid_idempotency_key"


class UnauthorizedError(ClientError):
    default_code = "unauthorized"


class NotFoundError(ClientError):
    default_code = "not_found"


class UnknownChannelError(NotFoundError):
    default_code = "unknown_channel"


class PayloadTooLargeError(ClientError):
    default_code = "payload_too_large"


class TooManyMessagesError(PayloadTooLargeError):
    default_code = "too_many_messages"


class TooManyUsersError(PayloadTooLargeError):
    default_code = "too_many_users"


class UnprocessableError(ClientError):
    """422: the message does not fit the channel, or the key was used for another message."""

    default_code = "unprocessable"


class TypeNotAllowedError(UnprocessableError):
    default_code = "type_not_allowed"


class DataNotObjectError(UnprocessableError):
    default_code = "data_not_object"


class UsersRequiredError(UnprocessableError):
    default_code = "users_required"


class InvalidUserError(UnprocessableError):
    default_code = "invalid_user"


class DataTooDeepError(UnprocessableError):
    default_code = "data_too_deep"


class InvalidTagsError(UnprocessableError):
    default_code = "invalid_tags"


class IdempotencyKeyReusedError(UnprocessableError):
    default_code = "idempotency_key_reused"


class RateLimitedError(ClientError):
    default_code = "rate_limited"
    retryable = True


class ServerError(APIError):
    """5xx. 502/503/504 are retried (the publish was not stored, or the key makes a repeat
    harmless); other 5xx are not."""

    default_code = "server_error"


class BrokerUnavailableError(ServerError):
    default_code = "broker_unavailable"
    retryable = True


_BY_CODE: dict[str, type[APIError]] = {
    cls.default_code: cls
    for cls in (
        BadRequestError,
        InvalidIdempotencyKeyError,
        UnauthorizedError,
        NotFoundError,
        UnknownChannelError,
        PayloadTooLargeError,
        TooManyMessagesError,
        TooManyUsersError,
        TypeNotAllowedError,
        DataNotObjectError,
        InvalidTagsError,
        UsersRequiredError,
        InvalidUserError,
        DataTooDeepError,
        IdempotencyKeyReusedError,
        RateLimitedError,
        BrokerUnavailableError,
    )
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: RateLimitedError,
    503: BrokerUnavailableError,
}

#: Statuses retried with the same idempotency key.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


def error_for(status: int, body: Any) -> APIError:
    """The exception for an error answer: by code when Herald sent a known one, else by
    status family. ``body`` is the decoded JSON (or anything else, for foreign replies)."""
    code: str | None = None
    message = f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        if isinstance(err.get("code"), str):
            code = err["code"]
        if isinstance(err.get("message"), str):
            message = err["message"]
    cls = _BY_CODE.get(code) if code else None
    if cls is None:
        cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ClientError if status >= 400 else APIError
    if code is None:
        code = cls.default_code if status in _BY_STATUS else f"http_{status}"
    error = cls(message, code=code, status=status)
    if status in RETRYABLE_STATUSES:
        error.retryable = True
    return error


class UnmappedGroupError(HeraldError, LookupError):
    """The channel layer has no mapping for a group (or for a message type in that group):
    the message is refused, never dropped. ``group`` names the group."""

    default_code = "unmapped_group"

    def __init__(self, message: str, *, group: str, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.group = group


class UnsupportedOperationError(HeraldError, NotImplementedError):
    """A channel-layer method that only a WebSocket-serving Django process needs."""

    default_code = "unsupported_operation"
