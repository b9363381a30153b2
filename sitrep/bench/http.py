"""`sitrep bench http`: the HTTP service under load, batching on vs off, against the in-process runtime.

The servers run as subprocesses (`python -m serving`) on free loopback ports; this process is the load
generator (one keep-alive h11 connection and one asyncio task per concurrent client). Each cell runs for a
fixed time after a warm-up round; its latencies are the clients' (send to full response). The server's
peak RSS is reset (`/proc/PID/clear_refs`) before each cell and read (`VmHWM`) after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import numpy as np

from sitrep.bench.common import corpus_sentences, machine
from sitrep.serving.process import ServerProcess, cpus
from sitrep.serving.settings import Settings


@dataclass
class BenchConfig:
    bundle: Path
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    sizes: list[int] = field(default_factory=lambda: [1, 32])
    seconds: float = 8.0
    runtime: str = "onnx-int8"
    threads: int | None = None
    max_batch_size: int = 64
    max_batch_tokens: int = 512
    max_wait_ms: float = 2.0
    data: list[Path] = field(default_factory=lambda: [Path("data/test.jsonl")])
    modes: list[str] = field(default_factory=lambda: ["on", "off"])
    startup_timeout_s: float = 180.0


def percentiles_ms(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p[0]), 2), "p95_ms": round(float(p[1]), 2), "p99_ms": round(float(p[2]), 2)}


# --- in-process baseline -----------------------------------------------------------------------


class InProcess:
    """The runtime called directly, the way the batching server calls it: `max_batch_size` sentences per
    `Classifier.classify` call, forward passes within `max_batch_tokens`."""

    def __init__(self, config: BenchConfig, sentences: list[str]) -> None:
        from sitrep.models.runtime import load

        self.config = config
        self.sentences = sentences
        self.clf = load(config.bundle, config.runtime, threads=config.threads or cpus())
        self.clf.warmup()
        self.kwargs = {"batch_size": config.max_batch_size, "max_tokens": config.max_batch_tokens}
        self.clf.classify(sentences[: config.max_batch_size], **self.kwargs)
        self.offset = 0

    def measure(self, seconds: float) -> tuple[float, float]:
        """(sentences/s, CPU ms per sentence of this process) over `seconds` (at least one call)."""
        n = self.config.max_batch_size
        done = 0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        while done == 0 or time.perf_counter() - t0 < seconds:
            chunk = [self.sentences[(self.offset + k) % len(self.sentences)] for k in range(n)]
            self.clf.classify(chunk, **self.kwargs)
            done += n
            self.offset += n
        rate = done / (time.perf_counter() - t0)
        return round(rate, 1), round((time.process_time() - cpu0) * 1000 / done, 2)


# --- the server under test ---------------------------------------------------------------------


# --- the load generator ------------------------------------------------------------------------


def payloads(sentences: list[str], size: int, count: int = 256) -> list[bytes]:
    out = []
    for r in range(count):
        items = [{"id": str(k), "text": sentences[(r * size + k) % len(sentences)]} for k in range(size)]
        out.append(json.dumps({"items": items}, ensure_ascii=False).encode("utf-8"))
    return out


class _Connection:
    """One keep-alive HTTP/1.1 connection driven by h11 over asyncio streams.

    A lean client on purpose: on 2 cores the load generator shares the CPU with the server, and httpx's
    pool costs several ms of CPU per request at concurrency 32 (h11 alone: ~0.2 ms), which would
    measure the client instead of the server.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def post(self, target: str, body: bytes) -> int:
        """Send one request and read the whole response; returns the status code.

        A connection the server closed while idle (uvicorn's keep-alive timeout) is reopened first.
        """
        if self.reader.at_eof() or self.conn.our_state is not h11.IDLE:
            await self.reopen()
        headers = [
            ("host", self.host),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ]
        self.writer.write(
            self.conn.send(h11.Request(method="POST", target=target, headers=headers))
            + self.conn.send(h11.Data(data=body))
            + self.conn.send(h11.EndOfMessage())
        )
        status = 0
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await self.reader.read(1 << 16)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                self.conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
        self.conn.start_next_cycle()
        return status

    async def reopen(self) -> None:
        self.writer.close()
        host, port = self.host.rsplit(":", 1)
        self.reader, self.writer = await asyncio.open_connection(host, int(port))
        self.conn = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.writer.close()


async def _load(
    server: ServerProcess, bodies: list[bytes], concurrency: int, seconds: float
) -> dict[str, Any]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    conns = [await _Connection.open(host, int(port)) for _ in range(concurrency)]
    counter = iter(range(1 << 62))
    first = json.loads(bodies[0])["items"][0]
    warmup = json.dumps({"items": [first]}, ensure_ascii=False).encode("utf-8")

    async def one(conn: _Connection, record: bool) -> None:
        t0 = time.perf_counter()
        body = bodies[next(counter) % len(bodies)] if record else warmup
        try:
            status = str(await conn.post("/classify", body))
        except (OSError, h11.ProtocolError) as exc:
            status = type(exc).__name__
        if not record:
            return
        if status == "200":
            latencies.append(time.perf_counter() - t0)
        else:
            errors[status] = errors.get(status, 0) + 1

    try:
        # warm-up: every connection used once, with a one-sentence request so none sits idle for long
        await asyncio.gather(*(one(c, False) for c in conns))
        deadline = time.perf_counter() + seconds

        async def client_loop(conn: _Connection) -> None:
            while time.perf_counter() < deadline:
                await one(conn, True)

        cpu0 = server.cpu_seconds()
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(c) for c in conns))
        elapsed = time.perf_counter() - t0
        cpu = server.cpu_seconds() - cpu0
    finally:
        for c in conns:
            c.close()
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed, "server_cpu_s": cpu}


def run_cell(
    server: ServerProcess, sentences: list[str], size: int, concurrency: int, seconds: float
) -> dict:
    bodies = payloads(sentences, size)
    server.reset_peak_rss()
    out = asyncio.run(_load(server, bodies, concurrency, seconds))
    ok = len(out["latencies"])
    failed = sum(out["errors"].values())
    return {
        "sentences_per_request": size,
        "concurrency": concurrency,
        "requests": ok,
        "requests_per_s": round(ok / out["elapsed"], 1),
        "sentences_per_s": round(ok * size / out["elapsed"], 1),
        **percentiles_ms(out["latencies"]),
        # CPU the server spent per sentence answered: unlike throughput, barely moved by other load
        "server_cpu_ms_per_sentence": round(out["server_cpu_s"] * 1000 / (ok * size), 2) if ok else None,
        "errors": failed,
        "errors_by_status": out["errors"],
        "peak_rss_mb": server.peak_rss_mb(),
    }


# --- the whole run -----------------------------------------------------------------------------


def _server_env(config: BenchConfig, mode: str) -> dict[str, str]:
    env = {
        "SITREP_BUNDLE": str(config.bundle),
        "SITREP_RUNTIME": config.runtime,
        "SITREP_BATCHING": "true" if mode == "on" else "false",
        "SITREP_MAX_BATCH_SIZE": str(config.max_batch_size),
        "SITREP_MAX_WAIT_MS": str(config.max_wait_ms),
        "SITREP_MAX_BATCH_TOKENS": str(config.max_batch_tokens),
        "SITREP_QUEUE_LIMIT": str(max(4096, max(config.sizes) * max(config.concurrency) * 2)),
        "SITREP_ACCESS_LOG": "false",
        "SITREP_LOG_LEVEL": "warning",
    }
    if config.threads:  # else the server's own default (all usable CPUs)
        env["SITREP_THREADS"] = str(config.threads)
    return env


def run_bench(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Every cell measures, back to back, the in-process runtime and each server mode (alternating which mode
    goes first), so slow drifts in machine load hit the variants being compared alike."""
    import contextlib

    from tqdm import tqdm

    from sitrep.models.bundle import load_bundle

    bundle = load_bundle(config.bundle)  # verify before spending minutes on it
    sentences = corpus_sentences(list(config.data))
    threads = config.threads or cpus()  # the in-process runtime gets every CPU unless told otherwise
    server_threads = config.threads or Settings(bundle=config.bundle).intra_op_threads
    report: dict[str, Any] = {
        "command": "sitrep bench http " + " ".join(sys.argv[3:])
        if len(sys.argv) > 3
        else "sitrep bench http",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine(threads),
            "cpus": cpus(),
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
        },
        "bundle": {
            "path": str(config.bundle),
            "name": bundle.name,
            "version": bundle.version,
            "max_length": bundle.max_length,
        },
        "runtime": config.runtime,
        "threads": {"in_process": threads, "server": server_threads},
        "server": {
            "max_batch_size": config.max_batch_size,
            "max_batch_tokens": config.max_batch_tokens,
            "max_wait_ms": config.max_wait_ms,
        },
        "seconds_per_cell": config.seconds,
        "sentences": {
            "files": [str(p) for p in config.data],
            "count": len(sentences),
            "mean_chars": round(float(np.mean([len(s) for s in sentences])), 1),
        },
    }
    results: list[dict[str, Any]] = []
    in_process_runs: list[float] = []
    in_process_cpu: list[float] = []
    pairs = [(size, conc) for size in config.sizes for conc in config.concurrency]
    with contextlib.ExitStack() as stack:
        if progress:
            print("starting servers and the in-process runtime …", file=sys.stderr)
        servers = {
            m: stack.enter_context(ServerProcess(_server_env(config, m), config.startup_timeout_s))
            for m in config.modes
        }
        baseline = InProcess(config, sentences)
        bar = stack.enter_context(
            tqdm(
                total=len(pairs) * len(config.modes),
                desc="http cells",
                unit="cell",
                disable=not progress,
                file=sys.stderr,
            )
        )
        for k, (size, conc) in enumerate(pairs):
            ref, ref_cpu = baseline.measure(config.seconds / 2)
            in_process_runs.append(ref)
            in_process_cpu.append(ref_cpu)
            order = config.modes if k % 2 == 0 else list(reversed(config.modes))
            for mode in order:
                bar.set_postfix_str(f"batching {mode}, {size}/req, c={conc}")
                cell = run_cell(servers[mode], sentences, size, conc, config.seconds)
                results.append(
                    {
                        "batching": mode,
                        **cell,
                        "in_process_sentences_per_s": ref,
                        "in_process_cpu_ms_per_sentence": ref_cpu,
                        "vs_in_process": round(cell["sentences_per_s"] / ref, 3) if ref else None,
                    }
                )
                bar.update(1)
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["in_process"] = {
        "sentences_per_s": round(float(np.median(in_process_runs)), 1),
        "runs": in_process_runs,
        "cpu_ms_per_sentence": round(float(np.median(in_process_cpu)), 2),
        "batch_size": config.max_batch_size,
        "max_tokens": config.max_batch_tokens,
        "model": {"name": bundle.name, "version": bundle.version},
    }
    mode_rank = {m: i for i, m in enumerate(config.modes)}
    results.sort(key=lambda r: (mode_rank[r["batching"]], r["sentences_per_request"], r["concurrency"]))
    by_key = {(r["batching"], r["sentences_per_request"], r["concurrency"]): r for r in results}
    for r in results:
        off = by_key.get(("off", r["sentences_per_request"], r["concurrency"]))
        on = r["batching"] == "on" and off is not None
        r["vs_batching_off"] = (
            round(r["sentences_per_s"] / off["sentences_per_s"], 2) if on and off["sentences_per_s"] else None
        )
        # CPU efficiency: the off server's CPU per sentence over this one's (>1: batching saves CPU)
        r["cpu_vs_batching_off"] = (
            round(off["server_cpu_ms_per_sentence"] / r["server_cpu_ms_per_sentence"], 2)
            if on and off["server_cpu_ms_per_sentence"] and r["server_cpu_ms_per_sentence"]
            else None
        )
    report["cells"] = results
    return report


def render_markdown(report: dict[str, Any]) -> str:
    b = report["bundle"]
    ip = report["in_process"]
    m = report["machine"]
    lines = [
        f"Bundle `{b['name']}` {b['version']} ({b['path']}), runtime {report['runtime']}, "
        f"ONNX Runtime threads: {report['threads']['server']} in the server, {report['threads']['in_process']} "
        f"in process; {m['cpus']} CPUs (load average {m['load_average_before'][0]} before, "
        f"{m['load_average_after'][0]} after); server max batch {report['server']['max_batch_size']} sentences / "
        f"{report['server']['max_batch_tokens']} tokens, max wait {report['server']['max_wait_ms']} ms; "
        f"{report['seconds_per_cell']:g} s per cell; {report['sentences']['count']} sentences "
        f"(mean {report['sentences']['mean_chars']} chars) from {', '.join(report['sentences']['files'])}.",
        "",
        f"In-process runtime (`Classifier.classify`, {ip['batch_size']} sentences per call, "
        f"{ip['max_tokens']} tokens per forward pass), measured before each cell: median "
        f"**{ip['sentences_per_s']} sentences/s**, {ip['cpu_ms_per_sentence']} CPU ms per sentence "
        f"(runs: {', '.join(map(str, ip['runs']))} sentences/s).",
        "",
        "| batching | sentences/req | concurrency | req/s | sentences/s | p50 ms | p95 ms | p99 ms | errors "
        "| server peak RSS MB | server CPU ms/sentence | on/off (throughput) | on/off (CPU) "
        "| in-process sentences/s | HTTP/in-process |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def times(x: float | None) -> str:
        return f"{x:.2f}×" if x is not None else ""

    for r in report["cells"]:
        vs = f"{r['vs_in_process']:.2f}" if r["vs_in_process"] is not None else ""
        lines.append(
            f"| {r['batching']} | {r['sentences_per_request']} | {r['concurrency']} | {r['requests_per_s']} | "
            f"{r['sentences_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']} | "
            f"{r['peak_rss_mb']} | {r['server_cpu_ms_per_sentence']} | {times(r['vs_batching_off'])} | "
            f"{times(r['cpu_vs_batching_off'])} | {r['in_process_sentences_per_s']} | {vs} |"
        )
    return "\n".join(lines)
