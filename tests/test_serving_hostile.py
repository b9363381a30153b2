"""Hostile input (issue 14): each case must get a 4xx with the JSON error body, and the server must still
answer a normal request right after it. JSON, text encoding, HTTP framing and auth, against a real uvicorn."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import httpx
import pytest

from sitrep.serving.process import ServerProcess
from tests.test_serving import parse_response

KEY = "hostile-key-3b9e10"
ADMIN_KEY = "hostile-admin-77aa01"
AUTH = {"X-API-Key": KEY}
JSON = {"content-type": "application/json", **AUTH}
GOOD = {"items": [{"id": "ok", "text": "The group said it struck the base."}]}
LIMIT = 16384


@pytest.fixture(scope="module")
def server(tiny_bundle: Path):
    env = {
        "SITREP_BUNDLE": str(tiny_bundle),
        "SITREP_THREADS": "1",
        "SITREP_API_KEYS": KEY,
        "SITREP_ADMIN_KEYS": ADMIN_KEY,
        "SITREP_MAX_BODY_BYTES": str(LIMIT),
        "SITREP_MAX_ITEMS": "16",
        "SITREP_BODY_TIMEOUT_S": "1.5",
    }
    with ServerProcess(env, startup_timeout_s=60) as s:
        yield s


def item(**fields: object) -> bytes:
    return json.dumps({"items": [{"id": "a", "text": "x", **fields}]}).encode()


# (name, method, path, headers, body): sent with httpx
HTTP_CASES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    # --- JSON ---
    ("truncated json", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "x"}'),
    ("trailing garbage", "POST", "/classify", JSON, b'{"items": []} xyz'),
    ("NaN threshold", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "x"}], "thresholds": {"claim": NaN}}'),
    ("Infinity threshold", "POST", "/classify", JSON,
     b'{"items": [{"id": "a", "text": "x"}], "thresholds": {"claim": Infinity}}'),
    ("deep nesting", "POST", "/classify", JSON, b"[" * 5000 + b"]" * 5000),
    ("5000-digit number", "POST", "/classify", JSON, b'{"items": ' + b"7" * 5000 + b"}"),
    ("too many items", "POST", "/classify", JSON,
     json.dumps({"items": [{"id": str(i), "text": "x"} for i in range(17)]}).encode()),
    ("body is a string", "POST", "/classify", JSON, b'"items"'),
    ("body is null", "POST", "/classify", JSON, b"null"),
    ("body is a number", "POST", "/classify", JSON, b"42"),
    ("duplicate key, last wins", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "x"}], "items": 5}'),
    ("null item", "POST", "/classify", JSON, b'{"items": [null]}'),
    ("id an object", "POST", "/classify", JSON, item(id={"$gt": ""})),
    ("text an object", "POST", "/classify", JSON, item(text={"__proto__": {}})),
    ("thresholds a list", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "x"}], "thresholds": [0.5]}'),
    ("negative threshold", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "x"}], "thresholds": {"claim": -1}}'),
    ("boolean threshold", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "x"}], "thresholds": {"claim": true}}'),
    ("extra top-level field", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "x"}], "debug": true}'),
    ("id of 300 characters", "POST", "/classify", JSON, item(id="i" * 300)),
    ("empty lang", "POST", "/classify", JSON, item(lang="")),
    ("empty body", "POST", "/classify", JSON, b""),
    ("raw control character in a string", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "x\x01y"}]}'),
    # --- encoding ---
    ("invalid utf-8", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "\xff\xfe"}]}'),
    ("latin-1", "POST", "/classify", JSON, '{"items": [{"id": "a", "text": "café"}]}'.encode("latin-1")),
    ("utf-16 with BOM", "POST", "/classify", JSON, '{"items": [{"id": "a", "text": "x"}]}'.encode("utf-16")),
    ("overlong utf-8 slash", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "\xc0\xaf"}]}'),
    ("utf-8 encoded surrogate", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "\xed\xa0\x80"}]}'),
    ("lone surrogate escape in text", "POST", "/classify", JSON, b'{"items": [{"id": "a", "text": "\\ud800"}]}'),
    ("lone surrogate escape in id", "POST", "/classify", JSON, b'{"items": [{"id": "\\udfff", "text": "x"}]}'),
    ("zero-width text", "POST", "/classify", JSON, item(text="\u200b\u200d\ufeff")),
    ("text/plain", "POST", "/classify", {**AUTH, "content-type": "text/plain"}, json.dumps(GOOD).encode()),
    ("no content type", "POST", "/classify", AUTH, json.dumps(GOOD).encode()),
    ("gzip header, plain body", "POST", "/classify", {**JSON, "content-encoding": "gzip"}, json.dumps(GOOD).encode()),
    ("brotli body", "POST", "/classify", {**JSON, "content-encoding": "br"}, b"\x0b\x02\x80{}\x03"),
    ("gzip bomb", "POST", "/classify", {**JSON, "content-encoding": "gzip"}, gzip.compress(b" " * (LIMIT * 64))),
    ("truncated gzip", "POST", "/classify", {**JSON, "content-encoding": "gzip"}, gzip.compress(json.dumps(GOOD).encode())[:-12]),
    ("body over the limit", "POST", "/classify", JSON, item(text="x" * LIMIT)),
    # --- routes ---
    ("GET on /classify", "GET", "/classify", AUTH, b""),
    ("unknown route", "GET", "/../../etc/passwd", AUTH, b""),
    # --- auth ---
    ("no key", "POST", "/classify", {"content-type": "application/json"}, json.dumps(GOOD).encode()),
    ("wrong key", "POST", "/classify", {"content-type": "application/json", "x-api-key": "nope"}, json.dumps(GOOD).encode()),
    ("key prefix", "POST", "/classify", {"content-type": "application/json", "x-api-key": KEY[:-1]}, json.dumps(GOOD).encode()),
    ("key in another case", "POST", "/classify", {"content-type": "application/json", "x-api-key": KEY.upper()},
     json.dumps(GOOD).encode()),
    ("empty bearer", "POST", "/classify", {"content-type": "application/json", "authorization": "Bearer"},
     json.dumps(GOOD).encode()),
    ("basic auth", "POST", "/classify", {"content-type": "application/json", "authorization": f"Basic {KEY}"},
     json.dumps(GOOD).encode()),
    ("admin key on /classify", "POST", "/classify", {"content-type": "application/json", "x-api-key": ADMIN_KEY},
     json.dumps(GOOD).encode()),
    ("/v1/model without key", "GET", "/v1/model", {}, b""),
    ("reload with no key", "POST", "/admin/reload", {"content-type": "application/json"}, b"{}"),
    ("reload with an API key", "POST", "/admin/reload", JSON, b"{}"),
    ("reload outside the root", "POST", "/admin/reload", {"content-type": "application/json", "x-api-key": ADMIN_KEY},
     b'{"bundle": "/etc"}'),
    ("reload by traversal", "POST", "/admin/reload", {"content-type": "application/json", "x-api-key": ADMIN_KEY},
     b'{"bundle": "../../../../etc"}'),
    ("reload with an unknown field", "POST", "/admin/reload",
     {"content-type": "application/json", "x-api-key": ADMIN_KEY}, b'{"bundle": "x", "path": "/"}'),
]

REQUEST = b"POST /classify HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\n"
# (name, raw bytes): sent on a socket, read until the server closes
RAW_CASES: list[tuple[str, bytes]] = [
    ("bad request line", b"GARBAGE\r\n\r\n"),
    ("header without colon", REQUEST + b"NoColon\r\n\r\n"),
    ("content-length not a number", REQUEST + b"Content-Length: abc\r\n\r\n"),
    ("two content-lengths", REQUEST + b"Content-Length: 2\r\nContent-Length: 30\r\n\r\n{}"),
    ("bad chunk size", REQUEST + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    ("header of 70 KB", REQUEST + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n"),
    ("content-length over the limit", REQUEST + b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{"),
    ("stalled body", REQUEST + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"items\""),
    ("negative content-length", REQUEST + b"Content-Length: -5\r\n\r\n"),
]


def assert_still_serving(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/classify", json=GOOD, headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["results"][0]["id"] == "ok", r.text


def test_there_are_enough_cases() -> None:
    assert len(HTTP_CASES) + len(RAW_CASES) >= 40


@pytest.mark.parametrize(("name", "method", "path", "headers", "body"), HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_hostile_request(server: ServerProcess, name: str, method: str, path: str, headers: dict[str, str],
                         body: bytes) -> None:  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.request(method, path, content=body or None, headers=headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert isinstance(err["code"], str) and err["code"] and err["message"], err
    assert_still_serving(server)


@pytest.mark.parametrize(("name", "data"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_hostile_bytes(server: ServerProcess, name: str, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(data)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    status, headers, body = parse_response(got)
    assert 400 <= status < 500, got[:300]
    assert headers["content-type"] == "application/json", got[:300]
    assert json.loads(body)["error"]["code"], body
    assert_still_serving(server)
