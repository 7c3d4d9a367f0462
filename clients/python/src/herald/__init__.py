"""Herald's Python client: publish to a Herald cluster from Python code.

- :class:`Publisher` (blocking) and :class:`AsyncPublisher` (asyncio) for the publish API,
  with batching, bounded retries and an idempotency key on every message;
- :mod:`herald.errors`, one exception class per API error code;
- :mod:`herald.django`, a Django Channels layer forwarding ``group_send`` to Herald.
"""

from ._core import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    BatchItem,
    Message,
    PublishResult,
    RetryPolicy,
    new_idempotency_key,
)
from .aio import AsyncPublisher
from .client import Publisher
from .errors import (
    APIError,
    BadRequestError,
    BrokerUnavailableError,
    ClientError,
    ConfigurationError,
    DataNotObjectError,
    DataTooDeepError,
    HeraldError,
    IdempotencyKeyReusedError,
    InvalidIdempotencyKeyError,
    InvalidMessageError,
    InvalidTagsError,
    InvalidUserError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    TooManyMessagesError,
    TooManyUsersError,
    TransportError,
    TypeNotAllowedError,
    UnauthorizedError,
    UnknownChannelError,
    UnmappedGroupError,
    UnprocessableError,
    UnsupportedOperationError,
    UsersRequiredError,
)

__version__ = "0.1.0"

__all__ = [
    "APIError", "AsyncPublisher", "BadRequestError", "BatchItem", "BrokerUnavailableError", "ClientError",
    "ConfigurationError", "DataNotObjectError", "DataTooDeepError", "HeraldError", "IdempotencyKeyReusedError",
    "InvalidIdempotencyKeyError", "InvalidMessageError", "InvalidTagsError", "InvalidUserError", "MAX_BATCH", "MAX_BODY_BYTES",
    "Message", "NotFoundError", "PayloadTooLargeError", "Publisher", "PublishResult", "RateLimitedError",
    "RetryPolicy", "ServerError", "TooManyMessagesError", "TooManyUsersError", "TransportError",
    "TypeNotAllowedError", "UnauthorizedError", "UnknownChannelError", "UnmappedGroupError", "UnprocessableError",
    "UnsupportedOperationError", "UsersRequiredError", "new_idempotency_key",
]
