#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into corpus/<target>/.

Real frames, publish bodies, tokens and wire entries from the README and the node's
tests, plus hostile identifiers (quotes, backslashes, CORP\\alice, emoji, deep
nesting, very long). Run once before a first campaign; the committed corpus is the
minimized result of a campaign that started from these.
"""
import base64, hashlib, hmac, json, os, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")
HOSTILE = ["CORP\\alice", 'o"brien', "🦀 ünïcødé \u2028", "tab\tnl\ncr\rnul\u0000del\u007f",
           '\\"\\\\"\\"', "", "x" * 300, "notifications", "orders", "42"]
SECRET = b"fuzz-secret"  # the key fuzz_targets/token.rs verifies with


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    h = hashlib.sha1(data).hexdigest()[:12]
    with open(os.path.join(d, f"seed-{name}-{h}"), "wb") as f:
        f.write(data)


def dumps(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def frames():
    t = "client_frame"
    for i, f in enumerate([
        '{"type":"ping"}',
        '{"type":"subscribe","channels":["notifications","alerts"]}',
        '{"type":"unsubscribe","channels":["alerts"]}',
        '{"type":"subscribe","channels":["orders"],"since":{"orders":"17-0"}}',
        '{"type":"ack","channel":"tasks","offset":"1700000000000-0"}',
        '{"type":"ack","channel":"orders","offset":"18446744073709551615-18446744073709551615"}',
        '{nope', '[1]', '{"kind":"ping"}', '{"type":"dance"}',
        '{"type":"subscribe","channels":"alerts"}', '{"type":"subscribe","channels":[1]}',
        '{"type":"subscribe","channels":[],"since":[]}', '{"type":"subscribe","channels":["a"],"since":null}',
        '{"type":"ping","type":"ack"}', '[' * 200 + ']' * 200,
    ]):
        write(t, f"readme{i}", f)
    for i, h in enumerate(HOSTILE):
        write(t, f"hostile{i}", dumps({"type": "subscribe", "channels": [h, "alerts"], "since": {h: "5-1"}}))
        write(t, f"hostile-ack{i}", dumps({"type": "ack", "channel": h, "offset": h}))
        write(t, f"hostile-ascii{i}", json.dumps({"type": "unsubscribe", "channels": [h]}))


def bodies():
    t = "publish_body"
    caps = bytes([8, 64, 8])  # max batch, max depth, max users (see the target)
    one = {"channel": "notifications", "type": "notification", "users": ["42"],
           "data": {"id": 1, "title": "Order shipped", "content": "PO20231201001"}}
    items = [
        one,
        {"channel": "alerts", "type": "alert", "data": {}},
        {"channel": "orders", "type": "order_update", "users": [42, "CORP\\alice", 'o"brien'], "data": {"a": [1, {"b": []}]}},
        {"channel": "x", "type": "y", "data": [1]},
        {"channel": "x", "type": "y", "data": {"k": "]]]}}}\\\""}, "users": [1.5]},
        {"channel": "x", "type": "y", "data": {}, "extra": 1},
        {"channel": "x", "type": "y", "data": {}, "users": []},
        {"channel": "stock", "type": "level", "data": {}, "tags": {"region": "eu", "who": 'CORP\\alice "q"'}},
        {"channel": "stock", "type": "level", "data": {}, "tags": {"a b": "x", "k": 1}},
        {"channel": "stock", "type": "level", "data": {}, "tags": {f"k{i}": "v" for i in range(17)}},
    ]
    for i, item in enumerate(items):
        write(t, f"one{i}", caps + dumps(item).encode())
    write(t, "batch", caps + dumps(items).encode())
    write(t, "batch-pretty", caps + json.dumps(items, indent=2).encode())
    write(t, "too-many", bytes([2, 64, 2]) + dumps([one] * 3).encode())
    write(t, "too-many-users", bytes([8, 64, 2]) + dumps(dict(one, users=["1", "2", "3"])).encode())
    deep = {"channel": "x", "type": "y", "data": json.loads("{\"a\":" + "[" * 70 + "]" * 70 + "}")}
    write(t, "deep", caps + dumps(deep).encode())
    write(t, "broken-tail", bytes([3, 64, 8]) + b"[1,2,3,4,oops")
    write(t, "empty", caps + b"   ")
    for i, h in enumerate(HOSTILE):
        write(t, f"hostile{i}", caps + dumps({"channel": h, "type": h, "users": [h], "data": {h: h}}).encode())


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(header, claims, key=SECRET):
    msg = f"{b64(header)}.{b64(claims)}"
    sig = hmac.new(key, msg.encode(), hashlib.sha256).digest()
    return f"{msg}.{b64(sig)}"


def tokens():
    t = "token"
    hs = dumps({"alg": "HS256", "typ": "JWT"}).encode()
    far = 4102444800  # 2100-01-01
    claims = [
        {"user_id": 42, "exp": far}, {"user_id": "42", "exp": far}, {"sub": "alice", "roles": ["ops", "admin"], "exp": far},
        {"sub": "bob", "roles": "ops staff", "exp": far}, {"user_id": 1, "exp": 1}, {"user_id": 1, "exp": far, "nbf": far - 1},
        {"user_id": 1}, {"user_id": 1.5, "exp": far}, {"user_id": 1, "exp": far, "iss": "crm", "aud": "push"},
        {"token_type": "access", "exp": far, "iat": 1700000000, "jti": "abc", "user_id": 7},
    ] + [{"user_id": h, "roles": [h], "exp": far} for h in HOSTILE]
    for i, c in enumerate(claims):
        body = dumps(c).encode()
        write(t, f"raw{i}", b"\x00" + jwt(hs, body).encode())
        write(t, f"parts{i}", b"\x01" + hs + b"\xff" + body)
    for i, raw in enumerate(["not-a-jwt", "a.b.c", "..", "eyJhbGciOiJub25lIn0.e30.",
                             jwt(dumps({"alg": "RS256"}).encode(), b'{"user_id":1,"exp":4102444800}'),
                             jwt(dumps({"alg": "ES256", "kid": "CORP\\alice"}).encode(), b"{}"),
                             jwt(b'{"alg":"HS512","typ":"JWT"}', b'{"user_id":1,"exp":4102444800}', b"other")]):
        write(t, f"malformed{i}", b"\x00" + raw.encode())
    for i, h in enumerate([b'{"alg":"HS384"}', b'{"alg":"none"}', b'{"alg":"HS256","crit":["x"]}', b'{"alg":"HS256","b64":false}',
                           b'[]', b'{"alg":"HS256","jwk":{"kty":"oct"}}']):
        write(t, f"header{i}", b"\x01" + h + b"\xff" + b'{"user_id":"CORP\\\\alice","exp":4102444800}')
    write(t, "structured", b"\x02" + bytes(range(64)))


def wire():
    t = "wire_decode"
    entries = [
        '{"i":"m0","c":"notifications","t":"a\\"b","d":{"k":"\\\\"},"u":"CORP\\\\alice","a":5,"o":"n"}',
        '{"i":"m0","c":"orders","t":"order_update","d":{"id":0},"u":"42","a":5,"o":"node-old"}',
        '{"i":"m2","c":"orders","t":"x","d":{},"a":5,"o":"n","p":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","z":1}',
        '{"i":"m1","c":"orders","t":"order_update","d":{"id":1},"a":7,"o":"node-a","p":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","s":"vendor=opaque"}',
        '{"i":"m3","c":"stock","t":"level","d":{},"a":7,"o":"n","g":{"region":"eu","sku":"A-1"}}',
        '{"i":"m4","c":"stock","t":"level","d":{},"a":7,"o":"n","g":{"b":"2","a":"1","a":"3"}}',
        '{"i":"m5","c":"stock","t":"level","d":{},"a":7,"o":"n","g":{"k":1}}',
        '{nope', '{"i":1}', '{"i":"m","c":"c","t":"t","d":  [ 1 , 2 ] ,"a":18446744073709551615,"o":""}',
    ]
    for i, e in enumerate(entries):
        write(t, f"entry{i}", e)
        write(t, f"payload{i}", "5-1 " + e)
        write(t, f"payload-none{i}", "- " + e)
    for i, h in enumerate(HOSTILE):
        e = dumps({"i": h, "c": h, "t": h, "d": {"s": h}, "u": h, "a": 1, "o": h, "p": "00-" + h, "s": "v=" + h,
                   "g": {h: h, "k" + h: h + "v"}})
        write(t, f"hostile{i}", "9-3 " + e)
        write(t, f"hostile-ascii{i}", "9-3 " + json.dumps(json.loads(e), separators=(",", ":")))


frames(); bodies(); tokens(); wire()
print("seeds written to", os.path.normpath(ROOT), file=sys.stderr)
