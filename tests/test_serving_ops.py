"""Operations against real uvicorn servers on loopback: batching, overload, auth, reload, refusal, drain."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from sitrep.models.bundle import load_bundle, write_bundle_manifest
from sitrep.models.corpus import read_examples
from sitrep.serving.process import ServerProcess
from tests.test_serving import metric

KEYS = ("key-alpha-7f3e9c", "key-beta-0d21aa")
ADMIN_KEY = "admin-key-5c1b77"
ADMIN = {"X-API-Key": ADMIN_KEY}


def bundle_copy(src: Path, dst: Path, name: str, version: str) -> Path:
    """A copy of `src` under another name/version (re-hashed), so a swap is visible in responses."""
    shutil.copytree(src, dst)
    manifest = load_bundle(dst).manifest
    manifest.name, manifest.version = name, version
    write_bundle_manifest(dst, manifest)
    return dst


@pytest.fixture(scope="module")
def texts(tiny_data: dict[str, Path]) -> list[str]:
    return [e.text for e in read_examples(tiny_data["train"])]


def items(texts: list[str], n: int, offset: int = 0) -> list[dict[str, str]]:
    return [{"id": f"i{k}", "text": texts[(offset + k) % len(texts)]} for k in range(n)]


async def fire(url: str, bodies: list[dict], headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """Send all bodies at once, one connection each."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=headers) as client:
        return await asyncio.gather(*(client.post("/classify", json=b) for b in bodies))


# --- dynamic batching -------------------------------------------------------------------------


@pytest.mark.parametrize("batching", ["on", "off"])
def test_batching_merges_concurrent_requests(tiny_bundle: Path, texts: list[str], batching: str) -> None:
    env = {
        "SITREP_BUNDLE": str(tiny_bundle),
        "SITREP_THREADS": "1",
        "SITREP_MAX_WAIT_MS": "100",
        "SITREP_BATCHING": "true" if batching == "on" else "false",
    }
    with ServerProcess(env, startup_timeout_s=60) as server:
        before = httpx.get(server.url + "/metrics").text
        bodies = [{"items": items(texts, 1, k)} for k in range(16)]
        responses = asyncio.run(fire(server.url, bodies))
        after = httpx.get(server.url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * 16
    for body, r in zip(bodies, responses, strict=True):
        assert [x["id"] for x in r.json()["results"]] == [body["items"][0]["id"]]
    calls = metric(after, "sitrep_batch_size_requests_count") - metric(
        before, "sitrep_batch_size_requests_count"
    )
    merged = metric(after, "sitrep_batch_size_requests_sum") - metric(
        before, "sitrep_batch_size_requests_sum"
    )
    assert merged == 16
    if batching == "on":
        assert calls <= 8, f"16 concurrent requests took {calls} runtime calls"
    else:
        assert calls == 16


# --- overload -----------------------------------------------------------------------------------


def test_overload_sheds_with_retry_after_and_loses_nothing(tiny_bundle: Path, texts: list[str]) -> None:
    env = {
        "SITREP_BUNDLE": str(tiny_bundle),
        "SITREP_THREADS": "1",
        "SITREP_QUEUE_LIMIT": "128",
        "SITREP_MAX_BATCH_SIZE": "128",
        "SITREP_RETRY_AFTER_S": "2",
    }
    long_texts = [t for t in texts if len(t) > 150] or texts
    with ServerProcess(env, startup_timeout_s=60) as server:
        bodies = [{"items": items(long_texts, 128, 128 * k)} for k in range(30)]
        responses = asyncio.run(fire(server.url, bodies))
        text = httpx.get(server.url + "/metrics").text
        again = httpx.post(server.url + "/classify", json={"items": items(texts, 3)})
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
    for body, r in zip(bodies, responses, strict=True):
        if r.status_code == 200:  # accepted requests are answered in full
            assert [x["id"] for x in r.json()["results"]] == [it["id"] for it in body["items"]]
        else:
            assert r.headers["retry-after"] == "2"
            assert r.json()["error"]["code"] == "overloaded"
    assert metric(text, "sitrep_shed_requests_total", reason="queue_full") == codes.count(503)
    assert metric(text, "sitrep_http_requests_total", route="/classify", status="503") == codes.count(503)
    assert metric(text, "sitrep_inflight_sentences") == 0
    assert again.status_code == 200  # and it recovers at once


# --- auth, hot reload ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reload")
    v1 = bundle_copy(tiny_bundle, root / "v1", "tiny", "1.0.0")
    v2 = bundle_copy(tiny_bundle, root / "v2", "tiny-next", "2.0.0")
    v3 = bundle_copy(tiny_bundle, root / "v3", "tiny-next", "3.0.0")
    broken = bundle_copy(tiny_bundle, root / "broken", "tiny", "9.9.9")
    with (broken / "onnx" / "model.int8.onnx").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00corrupt\x00")
    link = root / "current"
    link.symlink_to(v1, target_is_directory=True)
    return {"v1": v1, "v2": v2, "v3": v3, "broken": broken, "link": link}


@pytest.fixture(scope="module")
def keyed_server(bundles: dict[str, Path]):
    env = {
        "SITREP_BUNDLE": str(bundles["link"]),
        "SITREP_THREADS": "1",
        "SITREP_API_KEYS": ",".join(KEYS),
        "SITREP_ADMIN_KEYS": ADMIN_KEY,
        "SITREP_MAX_BODY_BYTES": "4096",
    }
    with ServerProcess(env, startup_timeout_s=60) as server:
        yield server


def test_api_keys(keyed_server: ServerProcess) -> None:
    url = keyed_server.url
    body = {"items": [{"id": "a", "text": "The group said it hit the base."}]}
    r = httpx.post(url + "/classify", json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(url + "/classify", json=body, headers={"Authorization": "Bearer wrong-key-123"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(url + "/classify", json=body, headers={"X-API-Key": KEYS[0] + "x"})
    assert r.status_code == 401
    assert (
        httpx.post(url + "/classify", json=body, headers={"Authorization": f"Bearer {KEYS[0]}"}).status_code
        == 200
    )
    assert httpx.post(url + "/classify", json=body, headers={"X-API-Key": KEYS[1]}).status_code == 200
    # the key is checked before the body is even read
    r = httpx.post(url + "/classify", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 401
    r = httpx.post(url + "/classify", content=b"x" * 10000, headers={"content-type": "application/json"})
    assert r.status_code == 401
    assert httpx.get(url + "/v1/model").status_code == 401
    assert httpx.get(url + "/v1/model", headers={"X-API-Key": KEYS[0]}).status_code == 200
    assert httpx.post(url + "/admin/reload").status_code == 401
    for key in KEYS:  # a /classify key is not an admin key (issue 14, defect 2)
        r = httpx.post(url + "/admin/reload", json={}, headers={"X-API-Key": key})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(url + "/classify", json=body, headers=ADMIN)  # nor the other way round
    assert r.status_code == 401
    for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert httpx.get(url + open_path).status_code == 200
    log = keyed_server.log()
    assert "/classify" in log  # the access log is on ...
    for secret in (*KEYS, ADMIN_KEY, "wrong-key-123"):  # ... and never shows a key
        assert secret not in log


def test_admin_needs_configured_keys(tiny_bundle: Path) -> None:
    env = {"SITREP_BUNDLE": str(tiny_bundle), "SITREP_THREADS": "1", "SITREP_API_KEYS": KEYS[0]}
    with ServerProcess(env, startup_timeout_s=60) as s:
        r = httpx.post(s.url + "/admin/reload", json={})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"
        # API keys alone do not open the admin routes (issue 14, defect 2)
        r = httpx.post(s.url + "/admin/reload", json={}, headers={"X-API-Key": KEYS[0]})
        assert r.status_code == 403 and "SITREP_ADMIN_KEYS" in r.json()["error"]["message"]


def test_reload_only_inside_the_models_root(
    keyed_server: ServerProcess, bundles: dict[str, Path], tmp_path: Path
) -> None:
    """Issue 14, defect 2: a bundle outside SITREP_MODELS_ROOT (default: the served bundle's parent) is refused
    with the same answer whether or not the path exists, and nothing is loaded."""
    outside = bundle_copy(bundles["v1"], tmp_path / "outside", "tiny-evil", "6.6.6")
    escape = bundles["v1"].parent / "escape"
    escape.symlink_to(outside, target_is_directory=True)
    before = httpx.get(keyed_server.url + "/readyz").json()["model"]
    messages = set()
    for target in (str(outside), str(tmp_path / "does-not-exist"), "/etc", str(escape), "../" + outside.parent.name,
                   str(bundles["v1"].parent), "v2/.."):  # fmt: skip
        r = httpx.post(keyed_server.url + "/admin/reload", json={"bundle": target}, headers=ADMIN)
        assert r.status_code == 403, (target, r.text)
        err = r.json()["error"]
        assert (err["code"], err["field"]) == ("bundle_not_allowed", "bundle")
        messages.add(err["message"])
    assert len(messages) == 1 and "SITREP_MODELS_ROOT" in messages.pop()
    assert httpx.get(keyed_server.url + "/readyz").json()["model"] == before
    # inside the root, by relative path, it loads
    r = httpx.post(keyed_server.url + "/admin/reload", json={"bundle": "v1"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["current"]["version"] == "1.0.0", r.text
    spec = httpx.get(keyed_server.url + "/openapi.json").json()
    assert {"400", "401", "403", "422"} <= set(spec["paths"]["/admin/reload"]["post"]["responses"])


async def _load_during(url: str, texts: list[str], action, seconds_after: float = 1.0, workers: int = 8):
    """Clients send requests in a loop; `action()` runs meanwhile; returns every response per worker."""
    headers = {"Authorization": f"Bearer {KEYS[0]}"}
    stop = asyncio.Event()
    seen: list[list[tuple[int, str]]] = [[] for _ in range(workers)]
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:

        async def worker(w: int) -> None:
            k = 0
            while not stop.is_set():
                body = {"items": items(texts, 1 + (k % 5), offset=w * 100 + k)}
                r = await client.post("/classify", json=body)
                version = r.json()["model"]["version"] if r.status_code == 200 else ""
                if r.status_code == 200:
                    assert [x["id"] for x in r.json()["results"]] == [it["id"] for it in body["items"]]
                seen[w].append((r.status_code, version))
                k += 1

        tasks = [asyncio.create_task(worker(w)) for w in range(workers)]
        await asyncio.sleep(0.5)
        result = await action(client)
        await asyncio.sleep(seconds_after)
        stop.set()
        await asyncio.gather(*tasks)
    return result, seen


def test_hot_reload_under_load_fails_no_request(
    keyed_server: ServerProcess, bundles: dict[str, Path], texts: list[str]
) -> None:
    async def reload(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/admin/reload", json={"bundle": str(bundles["v2"])}, headers=ADMIN)

    r, seen = asyncio.run(_load_during(keyed_server.url, texts, reload))
    assert r.status_code == 200, r.text
    assert r.json()["previous"]["version"] == "1.0.0" and r.json()["current"]["version"] == "2.0.0"
    flat = [x for w in seen for x in w]
    assert len(flat) > 50
    assert [code for code, _ in flat if code != 200] == []  # zero failed requests
    for w in seen:  # each client sees the old model, then the new one, never back
        versions = [v for _, v in w]
        assert versions[0] == "1.0.0" and versions[-1] == "2.0.0"
        assert versions == sorted(versions)
    ready = httpx.get(keyed_server.url + "/readyz").json()
    assert ready["model"] == {"name": "tiny-next", "version": "2.0.0", "runtime": "onnx-int8"}
    text = httpx.get(keyed_server.url + "/metrics").text
    assert metric(text, "sitrep_model_info", version="2.0.0") == 1
    assert metric(text, "sitrep_model_reloads_total", result="ok") >= 1


def test_failed_reload_keeps_serving(keyed_server: ServerProcess, bundles: dict[str, Path]) -> None:
    headers = {"X-API-Key": KEYS[1]}
    before = httpx.get(keyed_server.url + "/readyz").json()["model"]
    for target, words in (
        (bundles["broken"], "corrupted"),
        (bundles["v1"].parent / "missing", "not a model bundle"),
    ):
        r = httpx.post(keyed_server.url + "/admin/reload", json={"bundle": str(target)}, headers=ADMIN)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "bundle_invalid" and words in err["message"] and err["field"] == "bundle"
    assert httpx.get(keyed_server.url + "/readyz").json()["model"] == before
    r = httpx.post(
        keyed_server.url + "/classify", json={"items": [{"id": "a", "text": "x"}]}, headers=headers
    )
    assert r.status_code == 200 and r.json()["model"] == before
    assert (
        metric(httpx.get(keyed_server.url + "/metrics").text, "sitrep_model_reloads_total", result="failed")
        >= 2
    )


def test_sighup_reloads_the_configured_bundle(
    keyed_server: ServerProcess, bundles: dict[str, Path], texts: list[str]
) -> None:
    link = bundles["link"]
    tmp = link.with_name("current.tmp")
    tmp.symlink_to(bundles["v3"], target_is_directory=True)
    os.replace(tmp, link)  # atomically repoint the configured path, then ask for a reload

    async def hup(client: httpx.AsyncClient) -> None:
        keyed_server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (await client.get("/readyz")).json()["model"]["version"] == "3.0.0":
                return
            await asyncio.sleep(0.05)
        raise AssertionError("SIGHUP did not reload the bundle")

    _, seen = asyncio.run(_load_during(keyed_server.url, texts, hup, seconds_after=0.5, workers=4))
    assert [code for w in seen for code, _ in w if code != 200] == []
    assert all(w[-1][1] == "3.0.0" for w in seen)
    assert keyed_server.proc.poll() is None  # SIGHUP did not stop the server


# --- refusing long texts ------------------------------------------------------------------------


def test_refuse_mode(tiny_bundle: Path, texts: list[str]) -> None:
    env = {
        "SITREP_BUNDLE": str(tiny_bundle),
        "SITREP_THREADS": "1",
        "SITREP_LONG_TEXT": "refuse",
        "SITREP_MAX_TEXT_CHARS": "300",
        "SITREP_MAX_WAIT_MS": "50",
    }
    many_tokens = "a b c d e f g h " * 18  # 288 characters, well over the tiny model's 64 tokens
    with ServerProcess(env, startup_timeout_s=60) as server:
        bodies = [
            {"items": [{"id": "ok", "text": "Short."}, {"id": "long", "text": "y" * 301}]},
            {"items": [{"id": "ok", "text": "Short."}, {"id": "tok", "text": many_tokens}]},
            {
                "items": [
                    {"id": "t", "text": "Fine."},
                    {"id": "d", "document": "Fine.\n" + many_tokens + "\nEnd."},
                ]
            },
            *[{"items": items(texts[:1], 2, k)} for k in range(6)],  # good requests batched alongside
        ]
        responses = asyncio.run(fire(server.url, bodies))
    errors = [r.json()["error"] for r in responses[:3]]
    assert [r.status_code for r in responses[:3]] == [422, 422, 422]
    assert [(e["code"], e["field"]) for e in errors] == [
        ("text_too_long", "items[1].text"),
        ("text_too_long", "items[1].text"),
        ("text_too_long", "items[1].document"),
    ]
    assert "300" in errors[0]["message"] and "64 tokens" in errors[1]["message"]
    assert "sentence 1 of the document" in errors[2]["message"]
    assert [r.status_code for r in responses[3:]] == [200] * 6
    assert all(x["truncated"] is False for r in responses[3:] for x in r.json()["results"])


# --- graceful shutdown --------------------------------------------------------------------------


def test_sigterm_drains_accepted_requests(tiny_bundle: Path, texts: list[str], tmp_path: Path) -> None:
    # A long batch wait holds requests in the queue: SIGTERM comes once all 600 sentences are accepted
    # (answered or still waiting) and some are still queued, so the drain has work to finish. The first
    # few requests run at once (the batcher waits for company only once arrivals come fast), so the test
    # cannot wait for the whole 600 to sit in the queue together.
    env = {
        "SITREP_BUNDLE": str(tiny_bundle),
        "SITREP_THREADS": "1",
        "SITREP_MAX_WAIT_MS": "1500",
        "SITREP_MAX_BATCH_SIZE": "100000",
        "SITREP_QUEUE_LIMIT": "100000",
    }
    server = ServerProcess(env, startup_timeout_s=60, log_path=tmp_path / "server.log")
    bodies = [{"items": items(texts, 50, 50 * k)} for k in range(12)]

    async def scenario() -> list[httpx.Response]:
        sent = asyncio.create_task(fire(server.url, bodies))
        async with httpx.AsyncClient(base_url=server.url) as client:
            deadline = time.monotonic() + 20
            while True:
                text = (await client.get("/metrics")).text
                accepted = metric(text, "sitrep_sentences_total") + metric(text, "sitrep_inflight_sentences")
                if accepted >= 600 and metric(text, "sitrep_queue_depth") > 0:
                    break
                assert time.monotonic() < deadline, f"requests were not queued ({accepted:.0f} of 600 accepted)"
                await asyncio.sleep(0.01)
        server.signal(signal.SIGTERM)
        return await sent

    try:
        responses = asyncio.run(scenario())
        code = server.proc.wait(timeout=30)
    finally:
        server.stop()
    assert [r.status_code for r in responses] == [200] * 12
    for body, r in zip(bodies, responses, strict=True):
        assert [x["id"] for x in r.json()["results"]] == [it["id"] for it in body["items"]]
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled once it has shut down
    log = server.log()
    assert "drained" in log and "Traceback" not in log
