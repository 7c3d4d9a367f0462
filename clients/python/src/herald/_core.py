"""The publish protocol without I/O: message checks, JSON encoding, batch splitting, the
retry loop and the reading of Herald's answers.

The sync and asyncio publishers share this module and differ only in how they send bytes
and sleep: :func:`single_plan` and :func:`batch_plan` are generators that yield ``Send``
and ``Sleep`` steps and are resumed with the outcome of each, so every retry rule lives in
one place and is tested once.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union
from urllib.parse import urlsplit

from .errors import (
    RETRYABLE_STATUSES,
    ConfigurationError,
    HeraldError,
    InvalidMessageError,
    TransportError,
    error_for,
)

#: Herald's default limits (``HERALD_MAX_BATCH``, ``HERALD_MAX_PUBLISH_BYTES``).
MAX_BATCH = 1000
MAX_BODY_BYTES = 1024 * 1024
#: Herald's limit on an idempotency key, in UTF-8 bytes.
MAX_KEY_BYTES = 128
#: Herald's limits on a message's tags: how many, key and value length in UTF-8 bytes.
MAX_TAGS = 16
MAX_TAG_KEY_BYTES = 64
MAX_TAG_VALUE_BYTES = 256
_TAG_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
PUBLISH_PATH = "/api/v1/publish"


def new_idempotency_key() -> str:
    """A fresh random key (uuid4), as every message gets unless given one."""
    return str(uuid.uuid4())


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidMessageError(f"idempotency_key must be a string, not {type(key).__name__}")
    size = len(key.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_KEY_BYTES:
        raise InvalidMessageError(
            f"idempotency_key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, this one is {size}",
            code="invalid_idempotency_key",
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessageError("idempotency_key is not valid Unicode (lone surrogate)", code="invalid_idempotency_key") from None
    return key


def _check_users(users: object) -> tuple[str, ...] | None:
    if users is None:
        return None
    if isinstance(users, (str, bytes)) or not isinstance(users, Iterable):
        raise InvalidMessageError(
            f"users must be a list of user ids, not {type(users).__name__} (wrap a single id in a list)"
        )
    out = []
    for user in users:
        if isinstance(user, bool) or not isinstance(user, (str, int)):
            raise InvalidMessageError(f"a user id must be a string or an integer, not {user!r}")
        out.append(str(user))
    return tuple(out)


def _check_tags(tags: object) -> dict[str, str] | None:
    """Herald's tag limits, checked before anything is sent (the node checks them too)."""
    if tags is None:
        return None
    if not isinstance(tags, Mapping):
        raise InvalidMessageError(f"tags must be a dict of strings, not {type(tags).__name__}", code="invalid_tags")
    if len(tags) > MAX_TAGS:
        raise InvalidMessageError(f"tags holds {len(tags)} tags; at most {MAX_TAGS} are allowed", code="invalid_tags")
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_TAG_KEY_BYTES or not set(key) <= _TAG_KEY_CHARS:
            raise InvalidMessageError(
                f"tag key {key!r} must be 1 to {MAX_TAG_KEY_BYTES} characters of A-Z a-z 0-9 _ . : -",
                code="invalid_tags",
            )
        if not isinstance(value, str):
            raise InvalidMessageError(f"tag {key!r} must have a string value, not {value!r}", code="invalid_tags")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidMessageError(f"tag {key!r} is not valid Unicode (lone surrogate)", code="invalid_tags") from None
        if size > MAX_TAG_VALUE_BYTES:
            raise InvalidMessageError(
                f"tag {key!r} has a value of {size} bytes; at most {MAX_TAG_VALUE_BYTES} are allowed",
                code="invalid_tags",
            )
        out[key] = value
    return out or None


@dataclass(frozen=True)
class Message:
    """One publish: ``data`` (a JSON object) of ``type`` on ``channel``, to ``users`` (per-user
    channels) or every subscriber (broadcast channels, ``users=None``).

    ``tags`` (at most 16 short strings, e.g. ``{"region": "eu"}``) let subscribers filter
    on the node; ``idempotency_key`` defaults to a new uuid4. Keep the ``Message`` to retry it later:
    Herald answers a repeat within its window (5 minutes by default) with the original
    result and delivers nothing again.
    """

    channel: str
    type: str
    data: Mapping[str, Any]
    users: Sequence[str] | None = None
    idempotency_key: str = field(default_factory=new_idempotency_key)
    tags: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        for name in ("channel", "type"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidMessageError(f"{name} must be a non-empty string, not {value!r}")
        if not isinstance(self.data, Mapping):
            raise InvalidMessageError(f"data must be a JSON object (a dict), not {type(self.data).__name__}")
        object.__setattr__(self, "users", _check_users(self.users))
        _check_key(self.idempotency_key)
        object.__setattr__(self, "tags", _check_tags(self.tags))

    def to_json(self) -> dict[str, Any]:
        """The request object Herald expects for this message."""
        body: dict[str, Any] = {"channel": self.channel, "type": self.type, "data": dict(self.data)}
        if self.users is not None:
            body["users"] = list(self.users)
        if self.tags is not None:
            body["tags"] = dict(self.tags)
        body["idempotency_key"] = self.idempotency_key
        return body

    def encode(self) -> bytes:
        """UTF-8 JSON of :meth:`to_json`; refuses what JSON cannot carry."""
        try:
            text = json.dumps(self.to_json(), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            return text.encode("utf-8")
        except (TypeError, ValueError) as e:
            # UnicodeEncodeError (lone surrogates) is a ValueError too.
            raise InvalidMessageError(
                f"message for channel {self.channel!r} is not JSON-serialisable: {e}"
            ) from None


@dataclass(frozen=True)
class PublishResult:
    """Herald's answer for one message.

    ``offsets`` are the history offsets the message was stored at (one per recipient user on
    per-user history channels, one for a broadcast history channel, none without history);
    ``offset`` is the single one when there is exactly one. ``duplicate`` is true when the
    idempotency key had already been published: ``id`` and the offsets are then the original
    ones and nothing was delivered again."""

    id: str
    delivered_locally: int
    idempotency_key: str
    offsets: tuple[str, ...] = ()
    duplicate: bool = False

    @property
    def offset(self) -> str | None:
        return self.offsets[0] if len(self.offsets) == 1 else None

    @classmethod
    def from_json(cls, body: Any, key: str) -> PublishResult:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise TransportError(f"unexpected publish answer: {str(body)[:200]}", code="bad_response")
        offsets = body.get("offsets")
        if not isinstance(offsets, list):
            offsets = [body["offset"]] if body.get("offset") is not None else []
        delivered = body.get("delivered_locally", 0)
        return cls(
            id=body["id"],
            delivered_locally=delivered if isinstance(delivered, int) else 0,
            idempotency_key=key,
            offsets=tuple(str(o) for o in offsets),
            duplicate=body.get("duplicate") is True,
        )


#: One entry per message of a batch: its result, or the error Herald gave for it.
BatchItem = Union[PublishResult, HeraldError]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter.

    Retry ``n`` (0-based) waits a random time in ``[cap/2, cap]`` with
    ``cap = min(max_backoff, initial_backoff * 2**n)``, or longer when the answer carried a
    ``Retry-After`` (itself capped at ``max_backoff``). ``max_retries=0`` disables retries.
    """

    max_retries: int = 4
    initial_backoff: float = 0.2
    max_backoff: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigurationError(f"max_retries must be an integer >= 0, not {self.max_retries!r}")
        if not (0 < self.initial_backoff <= self.max_backoff):
            raise ConfigurationError("backoff must satisfy 0 < initial_backoff <= max_backoff")

    def cap(self, retry: int) -> float:
        return min(self.max_backoff, self.initial_backoff * (2.0 ** min(retry, 64)))

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        cap = self.cap(retry)
        wait = (rng or random).uniform(cap / 2, cap)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff))
        return wait


@dataclass(frozen=True)
class Send:
    """Step: POST ``body``; resume with a :class:`Response` or a :class:`TransportError`."""

    body: bytes


@dataclass(frozen=True)
class Sleep:
    """Step: wait ``seconds``; resume with ``None``."""

    seconds: float


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after")
        try:
            return max(0.0, float(value)) if value is not None else None
        except ValueError:
            return None


Plan = Generator[Union[Send, Sleep], Any, Any]


def split_batches(encoded: Sequence[bytes], max_batch: int, max_body_bytes: int) -> list[range]:
    """Index ranges of ``encoded`` such that each request (a JSON array) holds at most
    ``max_batch`` items and ``max_body_bytes`` bytes. An item too big alone is refused."""
    chunks: list[range] = []
    start, size = 0, 2  # "[" and "]"
    for i, item in enumerate(encoded):
        if len(item) + 2 > max_body_bytes:
            raise InvalidMessageError(
                f"message {i} is {len(item)} bytes encoded, over the {max_body_bytes}-byte request limit",
                code="payload_too_large",
            )
        extra = len(item) + (1 if i > start else 0)
        if i > start and (i - start >= max_batch or size + extra > max_body_bytes):
            chunks.append(range(start, i))
            start, size, extra = i, 2, len(item)
        size += extra
    if start < len(encoded):
        chunks.append(range(start, len(encoded)))
    return chunks


def single_plan(message: Message, policy: RetryPolicy, rng: random.Random | None = None) -> Plan:
    """Publishes one message (a JSON object body), retrying what is retryable."""
    body = message.encode()
    retry = 0
    while True:
        outcome = yield Send(body)
        if isinstance(outcome, TransportError):
            if retry >= policy.max_retries:
                raise outcome
            yield Sleep(policy.delay(retry, None, rng))
            retry += 1
            continue
        assert isinstance(outcome, Response)
        if outcome.status == 200:
            return PublishResult.from_json(outcome.json(), message.idempotency_key)
        if outcome.status in RETRYABLE_STATUSES and retry < policy.max_retries:
            yield Sleep(policy.delay(retry, outcome.retry_after(), rng))
            retry += 1
            continue
        raise error_for(outcome.status, outcome.json())


def batch_plan(messages: Sequence[Message], encoded: Sequence[bytes], policy: RetryPolicy,
               rng: random.Random | None = None) -> Plan:
    """Publishes ``messages`` as one JSON-array request. Items Herald answers with a
    retryable error (429, 503) are sent again, alone of their batch, with the same keys.
    Returns one :data:`BatchItem` per message; an error of the whole request is raised."""
    results: list[BatchItem | None] = [None] * len(messages)
    pending = list(range(len(messages)))
    retry = 0
    while True:
        body = b"[" + b",".join(encoded[i] for i in pending) + b"]"
        outcome = yield Send(body)
        if isinstance(outcome, TransportError):
            if retry >= policy.max_retries:
                raise outcome
            yield Sleep(policy.delay(retry, None, rng))
            retry += 1
            continue
        assert isinstance(outcome, Response)
        if outcome.status != 200:
            if outcome.status in RETRYABLE_STATUSES and retry < policy.max_retries:
                yield Sleep(policy.delay(retry, outcome.retry_after(), rng))
                retry += 1
                continue
            raise error_for(outcome.status, outcome.json())
        answer = outcome.json()
        items = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(items, list) or len(items) != len(pending):
            raise TransportError(
                f"unexpected batch answer for {len(pending)} messages: {outcome.body[:200]!r}", code="bad_response"
            )
        again = []
        for index, item in zip(pending, items, strict=True):
            status = item.get("status") if isinstance(item, dict) else None
            if isinstance(status, int) and status != 200:
                error = error_for(status, item)
                if status in RETRYABLE_STATUSES and retry < policy.max_retries:
                    again.append(index)
                results[index] = error
            else:
                results[index] = PublishResult.from_json(item, messages[index].idempotency_key)
        if not again:
            return [r for r in results if r is not None]
        pending = again
        yield Sleep(policy.delay(retry, outcome.retry_after(), rng))
        retry += 1


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach Herald's publish API, from a base URL such as
    ``https://herald.example.com`` (a path prefix is kept: ``https://host/push``)."""

    scheme: str
    host: str
    port: int
    path: str
    api_key: str

    @classmethod
    def parse(cls, url: str, api_key: str) -> Endpoint:
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"Herald URL must be a non-empty string, not {url!r}")
        if not isinstance(api_key, str) or not api_key:
            raise ConfigurationError("api_key must be a non-empty string")
        if any(c in api_key for c in "\r\n\0"):
            raise ConfigurationError("api_key must not contain CR, LF or NUL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"Herald URL must be http(s)://host[:port], got {url!r}")
        if parts.query or parts.fragment or parts.username:
            raise ConfigurationError(f"Herald URL must not carry a query, fragment or credentials: {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ConfigurationError(f"Herald URL has an invalid port: {url!r}") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/") + PUBLISH_PATH, api_key)

    def headers(self, body: bytes) -> dict[str, str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return {
            "Host": host if self.port == default else f"{host}:{self.port}",
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Accept": "application/json",
            "User-Agent": "herald-python",
        }


def encode_all(messages: Iterable[Message]) -> tuple[list[Message], list[bytes]]:
    msgs = list(messages)
    for m in msgs:
        if not isinstance(m, Message):
            raise InvalidMessageError(f"publish_many takes Message objects, not {type(m).__name__}")
    return msgs, [m.encode() for m in msgs]
