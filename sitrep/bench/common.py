"""What every benchmark shares: the sentences it runs on, the description of the machine it ran on,
and how its report is written (JSON, plus Markdown where a person reads it)."""

from __future__ import annotations

import glob
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.models.corpus import Example
from sitrep.models.cpu import cpu_name, has_vnni
from sitrep.models.files import jsonl_texts, write_json_atomic, write_text_atomic

NEWS_MIN_CHARS = 60  # shorter rows are headlines, bylines and captions: not news-length sentences


def corpus_sentences(data: str | Path | list[Path]) -> list[str]:
    """Every non-blank `text` of the JSONL files (`data`: a file, a glob pattern or a list of files)."""
    paths = data if isinstance(data, list) else [Path(p) for p in sorted(glob.glob(str(data)))] or [Path(data)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such data file (pass --data FILE.jsonl)")
    texts = jsonl_texts(paths)
    if not texts:
        raise ValueError(f"no sentences found in {data!s} (JSONL files with a 'text' field)")
    return texts


def sample_sentences(texts: list[str], n: int, seed: int = 0) -> list[str]:
    """`n` sentences: the pool shuffled (seeded), repeated as often as needed."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        batch = texts[:]
        rng.shuffle(batch)
        out.extend(batch)
    return out[:n]


def select_sentences(examples: list[Example], n: int, seed: int = 0) -> list[Example]:
    """n news-length sentences (>= 60 characters), round-robin over languages, in a seeded order."""
    rng = np.random.default_rng(seed)
    by_lang: dict[str, list[Example]] = {}
    for e in examples:
        if len(e.text) >= NEWS_MIN_CHARS:
            by_lang.setdefault(e.lang, []).append(e)
    pools = {lang: [xs[i] for i in rng.permutation(len(xs))] for lang, xs in sorted(by_lang.items())}
    picked: list[Example] = []
    i = 0
    while len(picked) < n and any(i < len(v) for v in pools.values()):
        for pool in pools.values():
            if i < len(pool) and len(picked) < n:
                picked.append(pool[i])
        i += 1
    return picked


def gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine(threads: int | None = None) -> dict[str, Any]:
    """The machine a benchmark ran on (and its 1-minute load average now)."""
    import psutil

    try:
        import onnxruntime as ort

        ort_version: str | None = ort.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu": cpu_name(),
        "vnni": has_vnni(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu_name(),
        "threads": threads,
        "python": platform.python_version(),
        "onnxruntime": ort_version,
        "platform": platform.platform(),
        "load_average_1m_at_start": load_average(),
    }


def write_report(report: dict[str, Any], json_path: Path | None, markdown: str | None = None,
                 markdown_path: Path | None = None) -> None:
    """The report as JSON (atomically) and, when given, its Markdown rendering."""
    for path, write in ((json_path, lambda p: write_json_atomic(p, report)),
                        (markdown_path if markdown is not None else None, lambda p: write_text_atomic(p, markdown))):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write(path)
