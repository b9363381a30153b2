"""The HTTP API against a real uvicorn on loopback: contract, order, documents, bad input, metrics, schema.

The server runs the tiny bundle with a steep calibration (a copy of `tiny_bundle`), so that different
sentences get visibly different scores and an ordering or splitting mistake cannot go unnoticed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sitrep.models.bundle import Calibration, load_bundle, write_bundle_manifest
from sitrep.models.corpus import read_examples
from sitrep.models.labels import LABELS
from sitrep.models.runtime import Classifier, load
from sitrep.models.text import split_sentences
from sitrep.serving.process import ServerProcess

REPO = Path(__file__).resolve().parent.parent
LIMITS = {
    "SITREP_MAX_ITEMS": "64",
    "SITREP_MAX_TEXT_CHARS": "300",
    "SITREP_MAX_DOCUMENT_CHARS": "5000",
    "SITREP_MAX_BODY_BYTES": "65536",
}


@pytest.fixture(scope="module")
def steep_bundle(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """tiny_bundle with a steep calibration centred on the median logit, thresholds 0.5: scores spread out."""
    out = tmp_path_factory.mktemp("steep") / "bundle"
    shutil.copytree(tiny_bundle, out)
    texts = [e.text for e in read_examples(tiny_data["dev"])]
    logits = load(out, "onnx").logits(texts)
    a = 4.0 / logits.std(axis=0)  # calibrated logits get a standard deviation of 4
    b = -a * np.median(logits, axis=0)
    manifest = load_bundle(out).manifest
    manifest.calibration = Calibration(a=[float(x) for x in a], b=[float(x) for x in b])
    manifest.thresholds = dict.fromkeys(LABELS, 0.5)
    manifest.version = "steep-1"
    write_bundle_manifest(out, manifest)
    return out


@pytest.fixture(scope="module")
def reference(steep_bundle: Path) -> Classifier:
    return load(steep_bundle, "onnx", threads=1)


@pytest.fixture(scope="module")
def server(steep_bundle: Path):
    env = {
        "SITREP_BUNDLE": str(steep_bundle),
        "SITREP_RUNTIME": "onnx",
        "SITREP_THREADS": "1",
        "SITREP_MAX_WAIT_MS": "5",
        "SITREP_BODY_TIMEOUT_S": "2",
        **LIMITS,
    }
    with ServerProcess(env, startup_timeout_s=60) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerProcess):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def sentences(tiny_data: dict[str, Path]) -> list[str]:
    return [e.text for e in read_examples(tiny_data["test"])][:40]


def post(client: httpx.Client, body: object) -> httpx.Response:
    return client.post("/classify", json=body)


def test_contract_order_and_independent_scores(
    client: httpx.Client, reference: Classifier, sentences: list[str]
) -> None:
    items = [{"id": f"s{i}", "text": t} for i, t in enumerate(sentences)]
    r = post(client, {"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "tiny", "version": "steep-1", "runtime": "onnx"}
    results = body["results"]
    assert [x["id"] for x in results] == [it["id"] for it in items]
    expected = reference.classify(sentences)
    got = np.array([[x["scores"][label] for label in LABELS] for x in results])
    assert list(results[0]["scores"]) == list(LABELS)
    # the test can fail: sentences really get different scores, so a shuffled answer would not match
    assert np.ptp(expected.probs, axis=0).min() > 0.2
    np.testing.assert_allclose(got, expected.probs, atol=1e-4)
    for x, labels, cut in zip(results, expected.labels, expected.truncated, strict=True):
        assert x["labels"] == labels == [label for label in LABELS if x["scores"][label] >= 0.5]
        assert x["truncated"] is cut
        assert "sentences" not in x
    # independent sigmoids, not a softmax: rows do not sum to one
    assert not np.allclose(got.sum(axis=1), 1.0, atol=0.05)


def test_concurrent_single_requests_get_their_own_answers(
    client: httpx.Client, reference: Classifier, sentences: list[str]
) -> None:
    expected = reference.classify(sentences[:24]).probs

    def one(i: int) -> tuple[int, dict]:
        r = post(client, {"items": [{"id": f"x{i}", "text": sentences[i], "lang": "und"}]})
        assert r.status_code == 200, r.text
        return i, r.json()["results"][0]

    with ThreadPoolExecutor(12) as pool:
        for i, res in pool.map(one, range(24)):
            assert res["id"] == f"x{i}" and res["lang"] == "und"
            np.testing.assert_allclose([res["scores"][label] for label in LABELS], expected[i], atol=1e-4)


def test_threshold_override_is_per_request(client: httpx.Client, sentences: list[str]) -> None:
    items = [{"id": str(i), "text": t} for i, t in enumerate(sentences[:10])]
    r = post(client, {"items": items, "thresholds": {"claim": 0.0, "casualty": 1.0}})
    assert r.status_code == 200, r.text
    for x in r.json()["results"]:
        assert "claim" in x["labels"] and "casualty" not in x["labels"]
        for label in ("official_confirmation", "retaliation"):  # untouched labels keep the model's 0.5
            assert (label in x["labels"]) == (x["scores"][label] >= 0.5)
    plain = post(client, {"items": items}).json()["results"]
    assert any("claim" not in x["labels"] for x in plain)


def test_document_mode_offsets_and_labels(client: httpx.Client, reference: Classifier) -> None:
    doc = (
        "Drone attack on air base\n"
        "A defense ministry spokesman confirmed that two rockets landed. Eight troops were hurt!\n\n"
        "قالت خلية الإعلام الأمني إن الدفاعات الجوية أسقطت طائرة مسيرة؟ لم تقع إصابات.\n"
        "گروه مسلح مسئولیت حمله را بر عهده گرفت. این گروه می\u200cگوید حمله در واکنش بود."
    )
    r = post(client, {"items": [{"id": "t", "text": "Before the document."}, {"id": "d", "document": doc}]})
    assert r.status_code == 200, r.text
    text_item, doc_item = r.json()["results"]
    assert text_item["id"] == "t" and "sentences" not in text_item
    sents = doc_item["sentences"]
    expected = split_sentences(doc)
    assert [(s["text"], s["start"], s["end"]) for s in sents] == [(s.text, s.start, s.end) for s in expected]
    assert len(sents) == 7
    for s in sents:
        assert doc[s["start"] : s["end"]] == s["text"]
    assert "می\u200cگوید" in sents[-1]["text"]
    ref = reference.classify([s.text for s in expected])
    np.testing.assert_allclose(
        [[s["scores"][label] for label in LABELS] for s in sents], ref.probs, atol=1e-4
    )
    assert [s["labels"] for s in sents] == ref.labels
    assert doc_item["labels"] == [label for label in LABELS if any(label in s["labels"] for s in sents)]
    np.testing.assert_allclose(
        [doc_item["scores"][label] for label in LABELS], ref.probs.max(axis=0), atol=1e-4
    )


def test_truncation_is_flagged(client: httpx.Client) -> None:
    long_chars = "The group said its fighters struck the base. " * 8  # > 300 characters
    many_tokens = "a b c d e f g h " * 30  # under 300 characters, but over the model's 64 tokens
    assert len(long_chars) > 300 and len(many_tokens[:290]) < 300
    items = [
        {"id": "chars", "text": long_chars},
        {"id": "tokens", "text": many_tokens[:290]},
        {"id": "short", "text": "Short."},
        {"id": "doc", "document": "Short one. " * 460},
    ]
    r = post(client, {"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    flags = {x["id"]: x["truncated"] for x in results}
    assert flags == {"chars": True, "tokens": True, "short": False, "doc": True}
    doc_sentences = results[3]["sentences"]
    # 5060 characters cut at 5000: the last sentence is cut mid-way ("Short o"), the others are whole
    assert len(doc_sentences) == 455 and doc_sentences[-1]["text"] == "Short"
    assert [x["truncated"] for x in doc_sentences] == [False] * 454 + [True]


def _too_long_text() -> str:
    return "x" * 301


BAD_INPUTS = [
    # (name, body, expected status, code, field)
    ("empty text", {"items": [{"id": "a", "text": ""}]}, 422, "empty_text", "items[0].text"),
    ("blank text", {"items": [{"id": "a", "text": " \n\t\u00a0"}]}, 422, "empty_text", "items[0].text"),
    (
        "blank document",
        {"items": [{"id": "a", "document": "  "}]},
        422,
        "empty_document",
        "items[0].document",
    ),
    ("no text", {"items": [{"id": "a"}]}, 422, "missing_text", "items[0].text"),
    ("null text", {"items": [{"id": "a", "text": None}]}, 422, "not_a_string", "items[0].text"),
    (
        "null document",
        {"items": [{"id": "a", "text": "x", "document": None}]},
        422,
        "not_a_string",
        "items[0].document",
    ),
    (
        "text and document",
        {"items": [{"id": "a", "text": "x", "document": "y"}]},
        422,
        "text_and_document",
        "items[0].document",
    ),
    (
        "number text",
        {"items": [{"id": "a", "text": "ok"}, {"id": "b", "text": 5}]},
        422,
        "not_a_string",
        "items[1].text",
    ),
    ("list text", {"items": [{"id": "a", "text": ["x"]}]}, 422, "not_a_string", "items[0].text"),
    ("number id", {"items": [{"id": 7, "text": "x"}]}, 422, "not_a_string", "items[0].id"),
    ("no id", {"items": [{"text": "x"}]}, 422, "missing_field", "items[0].id"),
    ("empty id", {"items": [{"id": "", "text": "x"}]}, 422, "too_short", "items[0].id"),
    ("no items", {}, 422, "missing_field", "items"),
    ("zero items", {"items": []}, 422, "too_short", "items"),
    ("items not a list", {"items": {"id": "a"}}, 422, "not_a_list", "items"),
    ("body not an object", [{"id": "a", "text": "x"}], 422, "not_an_object", None),
    ("unknown field", {"items": [{"id": "a", "txt": "x"}]}, 422, "unknown_field", "items[0].txt"),
    (
        "too many items",
        {"items": [{"id": str(i), "text": "x"} for i in range(65)]},
        422,
        "too_many_items",
        "items",
    ),
    (
        "duplicate ids",
        {"items": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}]},
        422,
        "duplicate_id",
        "items[2].id",
    ),
    (
        "unknown threshold",
        {"items": [{"id": "a", "text": "x"}], "thresholds": {"claims": 0.3}},
        422,
        "unknown_field",
        "thresholds.claims",
    ),
    (
        "threshold over 1",
        {"items": [{"id": "a", "text": "x"}], "thresholds": {"claim": 1.5}},
        422,
        "out_of_range",
        "thresholds.claim",
    ),
    (
        "threshold not a number",
        {"items": [{"id": "a", "text": "x"}], "thresholds": {"claim": False}},
        422,
        "not_a_number",
        "thresholds.claim",
    ),
    (
        "lone surrogate",
        {"items": [{"id": "a", "text": "bad \ud800 text"}]},
        422,
        "invalid_unicode",
        "items[0].text",
    ),
    # issue 14, defect 7: the README's codes, not pydantic's
    ("lone surrogate in id", {"items": [{"id": "a\udc00", "text": "x"}]}, 422, "invalid_unicode", "items[0].id"),
    (
        "lone surrogate in lang",
        {"items": [{"id": "a", "text": "x", "lang": "e\ud800"}]},
        422,
        "invalid_unicode",
        "items[0].lang",
    ),
    ("zero-width text", {"items": [{"id": "a", "text": "\u200b\u200c\ufeff \u2060"}]}, 422, "empty_text", "items[0].text"),
    ("zero-width document", {"items": [{"id": "a", "document": "\u200b\n\u200d"}]}, 422, "empty_document",
     "items[0].document"),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "code", "field"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_json_input(
    client: httpx.Client, name: str, body: object, status: int, code: str, field: str | None
) -> None:
    raw = json.dumps(body).encode()  # ensure_ascii: the lone surrogate travels as a valid \ud800 escape
    r = client.post("/classify", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err["code"], err["field"]) == (code, field), err
    assert err["message"]


RAW_INPUTS = [
    ("invalid json", b'{"items": [{"id": "a", "text": "x"}', "application/json", 400, "invalid_json"),
    ("trailing garbage", b'{"items": []} xyz', "application/json", 400, "invalid_json"),
    (
        "invalid utf-8",
        b'{"items": [{"id": "a", "text": "\xff\xfe bad"}]}',
        "application/json",
        400,
        "invalid_utf8",
    ),
    (
        "latin-1 text",
        '{"items": [{"id": "a", "text": "café"}]}'.encode("latin-1"),
        "application/json",
        400,
        "invalid_utf8",
    ),
    (
        "form encoded",
        b'{"items": [{"id": "a", "text": "x"}]}',
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
    ),
    ("no content type", b'{"items": [{"id": "a", "text": "x"}]}', None, 415, "unsupported_media_type"),
    ("empty body", b"", "application/json", 422, "missing_field"),
    ("deeply nested", b'{"items": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "application/json", 400,
     "invalid_json"),
    ("5000-digit number", b'{"items": [{"id": "a", "text": "x"}], "thresholds": {"claim": ' + b"9" * 5000 + b"}}",
     "application/json", 400, "invalid_json"),
    (
        "body too large",
        b'{"items": [{"id": "a", "text": "' + b"x" * 70000 + b'"}]}',
        "application/json",
        413,
        "body_too_large",
    ),
]


@pytest.mark.parametrize(
    ("name", "raw", "ctype", "status", "code"), RAW_INPUTS, ids=[r[0] for r in RAW_INPUTS]
)
def test_bad_raw_body(
    client: httpx.Client, name: str, raw: bytes, ctype: str | None, status: int, code: str
) -> None:
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/classify", content=raw, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_body_too_large_without_content_length(server: ServerProcess) -> None:
    def chunks():
        for _ in range(20):
            yield b"x" * 8192

    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/classify", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def raw_exchange(server: ServerProcess, data: bytes, pause_s: float = 0.0, timeout: float = 30.0) -> bytes:
    """Send `data` on a fresh connection (optionally then wait), read until the server closes or times out."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        if pause_s:
            time.sleep(pause_s)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def test_stalled_body_is_cut_with_408(server: ServerProcess, client: httpx.Client) -> None:
    """Issue 14, defect 3: half a body, then silence: 408 after SITREP_BODY_TIMEOUT_S (2 s here), connection closed."""
    request = (
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        b'{"items": [{"id": "a", "te'
    )
    t0 = time.monotonic()
    raw = raw_exchange(server, request, timeout=20)
    elapsed = time.monotonic() - t0
    status, headers, body = parse_response(raw)
    assert status == 408 and headers["connection"] == "close", raw
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert 1.5 < elapsed < 15, elapsed  # cut by the deadline, and the server closed the connection
    # a slow but steady body (each piece within the deadline, the whole past it) is cut too
    request = (
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(request)
        got = b""
        for _ in range(8):
            try:
                sock.sendall(b"1\r\n \r\n")
            except OSError:
                break
            time.sleep(0.5)
        sock.settimeout(10)
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert parse_response(got)[0] == 408, got
    assert post(client, {"items": [{"id": "a", "text": "Still serving."}]}).status_code == 200


MALFORMED_HTTP = [
    ("bad request line", b"GARBAGE\r\n\r\n"),
    ("header without colon", b"POST /classify HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"),
    ("content-length not a number", b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
    ("bad chunk size", b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    ("two content-lengths", b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
]


@pytest.mark.parametrize(("name", "data"), MALFORMED_HTTP, ids=[m[0] for m in MALFORMED_HTTP])
def test_malformed_http_gets_the_json_error_body(server: ServerProcess, name: str, data: bytes) -> None:
    """Issue 14, defect 7: uvicorn answered these in plain text."""
    status, headers, body = parse_response(raw_exchange(server, data, timeout=10))
    assert status == 400 and headers["content-type"] == "application/json", body
    assert json.loads(body)["error"]["code"] == "invalid_http"


def test_unknown_route_and_method(client: httpx.Client) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/classify")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_health_ready_model(client: httpx.Client, steep_bundle: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"]["version"] == "steep-1"
    model = client.get("/v1/model").json()
    assert model["model"] == {"name": "tiny", "version": "steep-1", "runtime": "onnx"}
    assert model["threads"] == 1
    assert model["manifest"] == load_bundle(steep_bundle).summary()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the first sample `name` whose labels include `labels`, from Prometheus text."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise KeyError(f"{name} {labels} not in metrics")


def test_metrics(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    ok_before = metric(before, "sitrep_http_requests_total", route="/classify", status="200")
    bad_before = metric(before, "sitrep_http_requests_total", route="/classify", status="422")
    assert (
        post(client, {"items": [{"id": "a", "text": "One."}, {"id": "b", "text": "Two."}]}).status_code == 200
    )
    assert post(client, {"items": [{"id": "a", "text": ""}]}).status_code == 422
    text = client.get("/metrics").text
    assert metric(text, "sitrep_http_requests_total", route="/classify", status="200") == ok_before + 1
    assert metric(text, "sitrep_http_requests_total", route="/classify", status="422") == bad_before + 1
    assert metric(text, "sitrep_http_request_duration_seconds_count", route="/classify") >= 2
    assert metric(text, "sitrep_batch_size_sentences_count") >= 1
    assert metric(text, "sitrep_batch_size_requests_sum") >= 1
    assert metric(text, "sitrep_queue_depth") == 0
    assert metric(text, "sitrep_inflight_sentences") == 0
    assert metric(text, "sitrep_sentences_total") >= 2
    for label in LABELS:
        assert 0.0 <= metric(text, "sitrep_label_positive_ratio", label=label) <= 1.0
        metric(text, "sitrep_label_positive_total", label=label)
    assert metric(text, "sitrep_model_info", version="steep-1", runtime="onnx") == 1
    assert metric(text, "sitrep_ready") == 1


def test_openapi_documents_the_api(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/classify"]["post"]
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(op["responses"])
    schemas = spec["components"]["schemas"]
    assert schemas["ClassifyRequest"]["examples"] and schemas["ClassifyResponse"]["examples"]
    assert set(schemas["Scores"]["properties"]) == set(LABELS)
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    for path in ("/healthz", "/readyz", "/metrics", "/v1/model", "/admin/reload"):
        assert path in spec["paths"]


def test_schemathesis_finds_no_server_error(steep_bundle: Path, tmp_path: Path) -> None:
    """Requests generated from the OpenAPI schema (valid and invalid): no 5xx, every response as documented,
    schema-invalid input refused, a bad key refused. Only `positive_data_acceptance` is left out: the schema
    cannot say that ids must be unique within a request."""
    env = {"SITREP_BUNDLE": str(steep_bundle), "SITREP_THREADS": "1", "SITREP_API_KEYS": "fuzz-key", **LIMITS}
    with ServerProcess(env, startup_timeout_s=60) as server:
        cmd = [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{server.url}/openapi.json",
            "--header",
            "Authorization: Bearer fuzz-key",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--exclude-path",
            "/admin/reload",
            "--max-examples",
            "60",
            "--seed",
            "7",
            "--generation-database",
            "none",
            "--workers",
            "2",
            "--no-color",
            "--report-dir",
            str(tmp_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        log = server.log()
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout
    assert "generated" in proc.stdout
    assert " 500 " not in log and "Traceback" not in log


def test_serving_never_imports_torch(tiny_bundle: Path) -> None:
    code = (
        "import sys\n"
        "import sitrep.serving.app, sitrep.serving.server, sitrep.serving.cli, sitrep.serving.process\n"
        "import sitrep.bench.http, sitrep.cli\n"
        "from sitrep.models.runtime import load\n"
        f"load({str(tiny_bundle)!r}).classify(['x'])\n"
        "from sitrep.serving.app import create_app\n"
        "create_app()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers'})\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_readme_documents_every_setting() -> None:
    from sitrep.serving.settings import Settings

    text = (REPO / "sitrep" / "serving" / "README.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"| `SITREP_{name.upper()}` |" in text, f"SITREP_{name.upper()} is missing from sitrep/serving/README.md"


def test_cli_help_and_clear_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitrep.cli import app
    runner = CliRunner()
    serve_help = runner.invoke(app, ["serve", "--help"])
    assert serve_help.exit_code == 0 and "Examples" in serve_help.output and "SITREP_API_KEYS" in serve_help.output
    bench_help = runner.invoke(app, ["bench", "http", "--help"])
    assert bench_help.exit_code == 0 and "--concurrency" in bench_help.output
    missing = runner.invoke(app, ["serve", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a model bundle" in missing.output
    bad = runner.invoke(app, ["serve", str(tmp_path), "--runtime", "tpu"])
    assert bad.exit_code == 2 and "unknown runtime" in bad.output
    bad = runner.invoke(app, ["bench", "http", str(tmp_path), "--concurrency", "1,x"])
    assert bad.exit_code == 2


def test_serve_errors_are_one_line(tiny_bundle: Path, tmp_path: Path) -> None:
    """Issue 14, defect 6: a bundle without its int8 file, a port in use: one line, exit 2, before loading."""
    import socket

    bundle = tmp_path / "no-int8"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "onnx" / "model.int8.onnx").unlink()
    cmd = [sys.executable, "-m", "sitrep.cli", "serve", str(bundle), "--port", "1"]
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "model.int8.onnx" in lines[0] and "missing" in lines[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command in ([sys.executable, "-m", "sitrep.cli", "serve", str(tiny_bundle), "--port", str(port)],
                        [sys.executable, "-m", "sitrep.serving"]):  # fmt: skip
            env.update(SITREP_BUNDLE=str(tiny_bundle), SITREP_PORT=str(port), SITREP_HOST="127.0.0.1")
            proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(lines) == 1, proc.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
            assert "Traceback" not in proc.stderr
