"""The publishers against the fake Herald: request shape, retries and their bounds, the
idempotency key across retries, typed errors, batching and hostile input. Every test runs
against both the blocking and the asyncio publisher."""

from __future__ import annotations

import math
import random
import uuid

import pytest

import fake_herald
import herald
from herald import InvalidMessageError, Message, RetryPolicy
from herald import errors as E

HOSTILE_USERS = ['CORP\\alice', 'o"brien', "'; DROP TABLE users; --", "🦀 ferris", "ﬁ-ligature", "Ａlice",
                 "x" * 5000, "tab\tnew\nline", "42"]
HOSTILE_DATA = {"title": 'He said "hi" \\ bye', "path": "C:\\Users\\CORP\\alice", "emoji": "🎉🦀👩‍👩‍👧",
                "nested": {"a": [1, 2.5, None, True, "é"]}, "long": "y" * 100_000, "zero": "\u0000"}


def test_publish_sends_the_documented_request(make_publisher, fake):
    pub = make_publisher()
    result = pub.publish("notifications", "notification", {"title": "Shipped"}, users=[42, "43"])
    [seen] = fake.requests
    assert seen.path == "/api/v1/publish"
    assert seen.headers["authorization"] == f"Bearer {fake_herald.API_KEY}"
    assert seen.headers["content-type"] == "application/json"
    key = seen.body.pop("idempotency_key")
    assert uuid.UUID(key).version == 4
    assert seen.body == {"channel": "notifications", "type": "notification", "data": {"title": "Shipped"},
                         "users": ["42", "43"]}
    assert result.idempotency_key == key and result.delivered_locally == 1 and not result.duplicate
    assert result.offset == "1" and isinstance(result.id, str)


def test_every_message_gets_its_own_key(make_publisher, fake):
    pub = make_publisher()
    for _ in range(3):
        pub.publish("alerts", "alert", {})
    keys = {r.body["idempotency_key"] for r in fake.requests}
    assert len(keys) == 3


@pytest.mark.parametrize("failure", [503, 429, 502, 504, "drop"])
def test_retryable_failures_are_retried_with_the_same_key(make_publisher, fake, failure):
    fake.script.extend([failure, failure])
    pub = make_publisher()
    result = pub.publish("alerts", "alert", {"n": 1})
    assert len(fake.requests) == 3
    keys = [r.body["idempotency_key"] for r in fake.requests]
    assert keys[0] == keys[1] == keys[2] == result.idempotency_key
    assert [r.body for r in fake.requests][0] == fake.requests[2].body
    assert len(fake.delivered()) == 1


def test_a_retry_after_an_unseen_success_is_answered_as_a_duplicate(make_publisher, fake):
    """The first attempt is published but its answer is lost (timeout): the retry carries
    the same key, so Herald answers the original id and nothing is delivered twice."""
    first = {}

    def publish_then_stall(body):
        first.update(fake.publish_one(body))
        import time
        time.sleep(0.5)
        return 200, first

    fake.script.append(publish_then_stall)
    pub = make_publisher(timeout=0.2)
    result = pub.publish("alerts", "alert", {"n": 1})
    assert result.duplicate and result.id == first["id"] and result.offset == first["offset"]
    assert len(fake.delivered()) == 1
    assert fake.requests[0].body == fake.requests[1].body


def test_retries_are_bounded_and_the_last_error_is_raised(make_publisher, fake):
    fake.script.extend([503] * 10)
    pub = make_publisher(retry=RetryPolicy(max_retries=2, initial_backoff=0.001, max_backoff=0.002))
    with pytest.raises(E.BrokerUnavailableError) as info:
        pub.publish("alerts", "alert", {})
    assert len(fake.requests) == 3
    assert info.value.status == 503 and info.value.code == "broker_unavailable"
    assert info.value.message == "fake broker_unavailable" and info.value.retryable


def test_connection_refused_is_retried_then_raised_as_transport_error(make_publisher):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    pub = make_publisher(url=f"http://127.0.0.1:{port}",
                         retry=RetryPolicy(max_retries=2, initial_backoff=0.001, max_backoff=0.002))
    with pytest.raises(E.TransportError) as info:
        pub.publish("alerts", "alert", {})
    assert info.value.status is None and info.value.code == "connection_error"
    assert str(port) in info.value.message


def test_max_retries_zero_disables_retries(make_publisher, fake):
    fake.script.append(503)
    pub = make_publisher(retry=RetryPolicy(max_retries=0))
    with pytest.raises(E.BrokerUnavailableError):
        pub.publish("alerts", "alert", {})
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "status,code,cls",
    [
        (400, "bad_request", E.BadRequestError),
        (400, "invalid_idempotency_key", E.InvalidIdempotencyKeyError),
        (401, "unauthorized", E.UnauthorizedError),
        (404, "unknown_channel", E.UnknownChannelError),
        (404, "not_found", E.NotFoundError),
        (405, "method_not_allowed", E.ClientError),
        (413, "payload_too_large", E.PayloadTooLargeError),
        (413, "too_many_messages", E.TooManyMessagesError),
        (413, "too_many_users", E.TooManyUsersError),
        (422, "type_not_allowed", E.TypeNotAllowedError),
        (422, "data_not_object", E.DataNotObjectError),
        (422, "users_required", E.UsersRequiredError),
        (422, "invalid_user", E.InvalidUserError),
        (422, "data_too_deep", E.DataTooDeepError),
        (422, "invalid_tags", E.InvalidTagsError),
        (422, "idempotency_key_reused", E.IdempotencyKeyReusedError),
        (422, "something_new", E.UnprocessableError),
        (500, "internal", E.ServerError),
    ],
)
def test_refusals_raise_their_class_without_retry(make_publisher, fake, status, code, cls):
    fake.script.append(lambda body: (status, {"error": {"code": code, "message": f"no: {code}"}}))
    pub = make_publisher()
    with pytest.raises(cls) as info:
        pub.publish("alerts", "alert", {})
    assert type(info.value) is cls
    assert (info.value.status, info.value.code, info.value.message) == (status, code, f"no: {code}")
    assert isinstance(info.value, herald.HeraldError) and not info.value.retryable
    assert len(fake.requests) == 1
    assert code in str(info.value) and str(status) in str(info.value)


def test_a_foreign_error_body_still_maps_by_status(make_publisher, fake):
    fake.script.append(lambda body: (404, ["not", "herald"]))
    with pytest.raises(E.NotFoundError) as info:
        make_publisher().publish("alerts", "alert", {})
    assert info.value.code == "not_found" and info.value.status == 404


def test_wrong_api_key_is_unauthorized(make_publisher, fake):
    pub = make_publisher()
    pub.inner.endpoint = herald._core.Endpoint.parse(fake.url, "wrong")
    with pytest.raises(E.UnauthorizedError):
        pub.publish("alerts", "alert", {})
    assert len(fake.requests) == 1


def test_retry_after_is_respected_within_the_cap(fake, monkeypatch):
    slept = []
    monkeypatch.setattr(herald.client.time, "sleep", slept.append)
    fake.script.append(lambda body: (429, {"error": {"code": "rate_limited", "message": "slow"}}))
    fake.script.append(lambda body: (503, {"error": {"code": "broker_unavailable", "message": "x"}}))
    pub = herald.Publisher(fake.url, fake_herald.API_KEY,
                           retry=RetryPolicy(max_retries=3, initial_backoff=0.01, max_backoff=0.5))
    orig = herald._core.Response.retry_after
    monkeypatch.setattr(herald._core.Response, "retry_after", lambda self: 7.0 if self.status == 429 else orig(self))
    pub.publish("alerts", "alert", {})
    assert slept[0] == 0.5  # Retry-After 7 s, capped at max_backoff
    assert 0.01 <= slept[1] <= 0.02
    pub.close()


def test_backoff_grows_exponentially_with_jitter_inside_its_bounds(fake, monkeypatch):
    slept = []
    monkeypatch.setattr(herald.client.time, "sleep", slept.append)
    fake.script.extend([503] * 6)
    policy = RetryPolicy(max_retries=6, initial_backoff=0.1, max_backoff=2.0)
    pub = herald.Publisher(fake.url, fake_herald.API_KEY, retry=policy)
    pub.publish("alerts", "alert", {})
    caps = [min(2.0, 0.1 * 2**n) for n in range(6)]
    assert len(slept) == 6
    for wait, cap in zip(slept, caps, strict=True):
        assert cap / 2 <= wait <= cap
    pub.close()


def test_retry_policy_delay_bounds_hold_for_many_draws():
    policy = RetryPolicy(max_retries=50, initial_backoff=0.05, max_backoff=3.0)
    rng = random.Random(7)
    for n in range(50):
        cap = min(3.0, 0.05 * 2**n)
        draws = [policy.delay(n, None, rng) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in draws)
        assert max(draws) - min(draws) > cap / 10  # it is jittered, not fixed
    assert policy.delay(1000, None, rng) <= 3.0  # no overflow for huge retry numbers
    assert policy.delay(0, 1e9, rng) == 3.0


@pytest.mark.parametrize("bad", [dict(max_retries=-1), dict(max_retries=1.5), dict(initial_backoff=0),
                                 dict(initial_backoff=5, max_backoff=1)])
def test_bad_retry_policy_is_refused(bad):
    with pytest.raises(E.ConfigurationError):
        RetryPolicy(**bad)


def test_hostile_values_arrive_byte_for_byte(make_publisher, fake):
    pub = make_publisher()
    hostile_type = 'type "with" \\ quotes 🦀'
    pub.publish('chan"nel\\🦀', hostile_type, HOSTILE_DATA, users=HOSTILE_USERS, idempotency_key='CORP\\key"🦀')
    [seen] = fake.requests
    assert seen.body["users"] == HOSTILE_USERS
    assert seen.body["data"] == HOSTILE_DATA
    assert seen.body["type"] == hostile_type and seen.body["channel"] == 'chan"nel\\🦀'
    assert seen.body["idempotency_key"] == 'CORP\\key"🦀'


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (dict(users="42"), "wrap a single id in a list"),
        (dict(users=[True]), "user id must be"),
        (dict(users=[None]), "user id must be"),
        (dict(users=[4.2]), "user id must be"),
        (dict(data=[1, 2]), "data must be a JSON object"),
        (dict(data={"x": math.nan}), "not JSON-serialisable"),
        (dict(data={"x": object()}), "not JSON-serialisable"),
        (dict(data={"x": "\ud800"}), "not JSON-serialisable"),
        (dict(channel=""), "channel must be a non-empty string"),
        (dict(channel=None), "channel must be a non-empty string"),
        (dict(type=""), "type must be a non-empty string"),
        (dict(idempotency_key=""), "1 to 128 bytes"),
        (dict(idempotency_key="k" * 129), "1 to 128 bytes"),
        (dict(idempotency_key="🦀" * 33), "this one is 132"),
        (dict(idempotency_key="\udc00"), "lone surrogate"),
        (dict(idempotency_key=42), "must be a string"),
        (dict(tags=["region", "eu"]), "tags must be a dict"),
        (dict(tags={"region": 5}), "must have a string value"),
        (dict(tags={"region": None}), "must have a string value"),
        (dict(tags={"": "eu"}), "1 to 64 characters"),
        (dict(tags={"k" * 65: "eu"}), "1 to 64 characters"),
        (dict(tags={"CORP\\alice": "eu"}), "1 to 64 characters"),
        (dict(tags={"rеgion": "eu"}), "1 to 64 characters"),  # Cyrillic "е"
        (dict(tags={5: "eu"}), "1 to 64 characters"),
        (dict(tags={"region": "é" * 129}), "258 bytes"),
        (dict(tags={"region": "\ud800"}), "lone surrogate"),
        (dict(tags={f"k{i}": "v" for i in range(17)}), "at most 16"),
    ],
)
def test_bad_messages_are_refused_before_sending(make_publisher, fake, kwargs, fragment):
    args = dict(channel="alerts", type="alert", data={})
    args.update(kwargs)
    pub = make_publisher()
    with pytest.raises(InvalidMessageError) as info:
        pub.publish(args.pop("channel"), args.pop("type"), args.pop("data"), **args)
    assert fragment in info.value.message
    assert isinstance(info.value, ValueError)
    assert fake.requests == []


def test_tags_are_sent_byte_for_byte_and_only_when_given(make_publisher, fake):
    pub = make_publisher()
    tags = {"region": "eu", "who": 'CORP\\alice "🦀"', "sku.v2:x-y_z": "", "long": "é" * 128}
    pub.publish("stocks", "price", {"n": 1}, tags=tags)
    pub.publish("stocks", "price", {"n": 2})
    pub.publish("stocks", "price", {"n": 3}, tags={})
    first, untagged, empty = fake.requests
    assert first.body["tags"] == tags
    assert "tags" not in untagged.body and "tags" not in empty.body
    message = Message("stocks", "price", {}, tags={f"k{i}": "v" for i in range(16)})
    assert message.to_json()["tags"] == {f"k{i}": "v" for i in range(16)}


def test_a_tagged_batch_keeps_each_items_tags(make_publisher, fake):
    pub = make_publisher()
    pub.publish_many([Message("stocks", "price", {"n": i}, tags={"region": r}) for i, r in enumerate(["eu", "us"])]
                     + [Message("stocks", "price", {"n": 2})])
    [seen] = fake.requests
    assert [item.get("tags") for item in seen.body] == [{"region": "eu"}, {"region": "us"}, None]


def test_a_128_byte_key_is_accepted(make_publisher, fake):
    make_publisher().publish("alerts", "alert", {}, idempotency_key="🦀" * 32)
    assert fake.requests[0].body["idempotency_key"] == "🦀" * 32


@pytest.mark.parametrize("url", ["", "ftp://x", "http://", "http://h/?q=1", "http://u:p@h", "http://h:99999", None])
def test_bad_urls_are_configuration_errors(url):
    with pytest.raises(E.ConfigurationError):
        herald.Publisher(url, "k")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["", "a\r\nX-Evil: 1", None])
def test_bad_api_keys_are_configuration_errors(key):
    with pytest.raises(E.ConfigurationError):
        herald.Publisher("http://127.0.0.1:1", key)  # type: ignore[arg-type]


def test_a_path_prefix_in_the_url_is_kept(fake):
    with herald.Publisher(fake.url + "/push/", fake_herald.API_KEY) as pub:
        pub.publish("alerts", "alert", {})
    assert fake.requests[0].path == "/push/api/v1/publish"


# Batches


def messages(n: int, **kw) -> list[Message]:
    return [Message("orders", "order_update", {"n": i}, users=[f"CORP\\user{i}"], **kw) for i in range(n)]


def test_a_batch_is_one_json_array_request(make_publisher, fake):
    batch = messages(3)
    results = make_publisher().publish_many(batch)
    [seen] = fake.requests
    assert isinstance(seen.body, list) and [i["data"]["n"] for i in seen.body] == [0, 1, 2]
    assert [i["idempotency_key"] for i in seen.body] == [m.idempotency_key for m in batch]
    assert [r.idempotency_key for r in results] == [m.idempotency_key for m in batch]


def test_batches_over_1000_are_split_in_order(make_publisher, fake):
    batch = messages(2501)
    results = make_publisher().publish_many(batch)
    assert [len(r.body) for r in fake.requests] == [1000, 1000, 501]
    sent = [item["data"]["n"] for r in fake.requests for item in r.body]
    assert sent == list(range(2501))
    assert [r.idempotency_key for r in results] == [m.idempotency_key for m in batch]


def test_batches_are_split_by_body_size(make_publisher, fake):
    batch = [Message("alerts", "alert", {"blob": "z" * 300, "n": i}) for i in range(10)]
    make_publisher(max_body_bytes=1000).publish_many(batch)
    raw_sizes = [len(__import__("json").dumps(r.body, separators=(",", ":"), ensure_ascii=False).encode())
                 for r in fake.requests]
    assert all(size <= 1000 for size in raw_sizes), raw_sizes
    assert sum(len(r.body) for r in fake.requests) == 10 and len(fake.requests) >= 4


def test_a_message_bigger_than_the_body_limit_is_refused_before_anything_is_sent(make_publisher, fake):
    batch = messages(2) + [Message("alerts", "alert", {"blob": "z" * 2000})]
    with pytest.raises(InvalidMessageError) as info:
        make_publisher(max_body_bytes=1000).publish_many(batch)
    assert info.value.code == "payload_too_large" and "message 2" in info.value.message
    assert fake.requests == []


def test_retryable_item_errors_are_resent_alone_with_their_keys(make_publisher, fake):
    def second_item_unavailable(body):
        results = []
        for i, item in enumerate(body):
            if i == 1:
                results.append({"status": 503, "error": {"code": "broker_unavailable", "message": "later"}})
            else:
                results.append(fake.publish_one(item))
        return 200, {"results": results}

    fake.script.append(second_item_unavailable)
    batch = messages(3)
    results = make_publisher().publish_many(batch)
    assert len(fake.requests) == 2
    assert [i["idempotency_key"] for i in fake.requests[1].body] == [batch[1].idempotency_key]
    assert all(isinstance(r, herald.PublishResult) for r in results)
    assert len(fake.delivered()) == 3


def test_item_refusals_are_returned_in_place_not_raised(make_publisher, fake):
    def refuse_first(body):
        return 200, {"results": [{"status": 404, "error": {"code": "unknown_channel", "message": "nope"}}]
                     + [fake.publish_one(i) for i in body[1:]]}

    fake.script.append(refuse_first)
    results = make_publisher().publish_many(messages(3))
    assert isinstance(results[0], E.UnknownChannelError) and results[0].status == 404
    assert isinstance(results[1], herald.PublishResult) and isinstance(results[2], herald.PublishResult)
    assert len(fake.requests) == 1


def test_a_whole_batch_refusal_is_raised(make_publisher, fake):
    fake.script.append(401)
    with pytest.raises(E.UnauthorizedError):
        make_publisher().publish_many(messages(3))


def test_republishing_the_same_messages_after_a_failure_delivers_each_once(make_publisher, fake):
    batch = messages(1500)
    # The 2nd chunk fails past the retries: its pooled connection is dropped (replaced at
    # once, without spending a retry), then the first attempt and 3 retries are dropped.
    fake.script.extend([None] + ["drop"] * 5)
    pub = make_publisher()
    with pytest.raises(E.TransportError):
        pub.publish_many(batch)
    results = pub.publish_many(batch)
    assert [r.duplicate for r in results] == [True] * 1000 + [False] * 500
    assert len(fake.delivered()) == 1500


def test_a_chunked_answer_is_read(make_publisher, fake):
    fake.script.append(("chunked", 200, {"id": "0193-chunked", "delivered_locally": 3}))
    result = make_publisher().publish("alerts", "alert", {})
    assert result.id == "0193-chunked" and result.delivered_locally == 3 and result.offset is None


def test_an_answer_that_is_not_herald_is_a_transport_error(make_publisher, fake):
    fake.script.append(lambda body: (200, {"unexpected": True}))
    with pytest.raises(E.TransportError) as info:
        make_publisher().publish("alerts", "alert", {})
    assert info.value.code == "bad_response"


def test_connections_are_kept_alive_and_reused(make_publisher, fake):
    pub = make_publisher()
    for _ in range(5):
        pub.publish("alerts", "alert", {})
    assert len({r.client_port for r in fake.requests}) == 1


def test_offsets_are_read_in_both_shapes(make_publisher, fake):
    fake.script.append(lambda body: (200, {"id": "a", "delivered_locally": 0, "offsets": ["1-0", "2-0"]}))
    fake.script.append(lambda body: (200, {"id": "b", "delivered_locally": 0, "offsets": ["3-0"]}))
    pub = make_publisher()
    many, one = pub.publish("n", "t", {}), pub.publish("n", "t", {})
    assert many.offsets == ("1-0", "2-0") and many.offset is None
    assert one.offsets == ("3-0",) and one.offset == "3-0"


def test_a_kept_alive_connection_the_server_closed_is_replaced_without_using_a_retry(make_publisher, fake):
    fake.script.append("close-after")
    pub = make_publisher(retry=RetryPolicy(max_retries=0))
    pub.publish("alerts", "alert", {"n": 1})
    import time

    time.sleep(0.1)  # let the close reach the client's socket
    pub.publish("alerts", "alert", {"n": 2})
    assert [r.body["data"]["n"] for r in fake.requests] == [1, 2]
    assert fake.requests[0].client_port != fake.requests[1].client_port


def test_one_publisher_is_shared_safely_by_threads(make_publisher, fake):
    from concurrent.futures import ThreadPoolExecutor

    pub = make_publisher()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: pub.publish("alerts", "alert", {"n": n}), range(64)))
    assert sorted(r.body["data"]["n"] for r in fake.requests) == list(range(64))
    by_key = {r.body["idempotency_key"]: r.body["data"]["n"] for r in fake.requests}
    assert [by_key[r.idempotency_key] for r in results] == list(range(64))


def test_concurrent_tasks_share_an_async_publisher(fake):
    import asyncio

    async def main():
        async with herald.AsyncPublisher(fake.url, fake_herald.API_KEY) as pub:
            return await asyncio.gather(*(pub.publish("alerts", "alert", {"n": n}) for n in range(50)))

    results = asyncio.run(main())
    by_key = {r.body["idempotency_key"]: r.body["data"]["n"] for r in fake.requests}
    assert [by_key[r.idempotency_key] for r in results] == list(range(50))


def test_a_cancelled_publish_never_leaves_its_answer_for_the_next_one(fake):
    """A connection whose answer was not read is closed, not pooled: the next publish must
    read its own answer, not the cancelled one's."""
    import asyncio

    fake.script.append(("stall", 0.3))

    async def main():
        async with herald.AsyncPublisher(fake.url, fake_herald.API_KEY) as pub:
            task = asyncio.create_task(pub.publish("alerts", "alert", {"n": "cancelled"}))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.4)  # the stalled answer is now written to the old socket
            return await pub.publish("alerts", "alert", {"n": "next"})

    result = asyncio.run(main())
    assert result.idempotency_key == fake.requests[1].body["idempotency_key"]
    assert fake.keys[("alerts", result.idempotency_key)]["id"] == result.id
