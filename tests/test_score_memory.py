"""Bounded memory: peak RSS of `sitrep score` does not grow with the size of the input."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from tests.tiny_model import WORDS

REPO = Path(__file__).resolve().parent.parent
PAYLOAD_CHARS = 4000  # an unused field per row, so the file is large while scoring stays cheap

CHILD = """
import resource, sys
from pathlib import Path
from sitrep.scoring.engine_local import score_local
from sitrep.scoring.options import ScoreOptions
summary = score_local(ScoreOptions(bundle=Path(sys.argv[1]), input=sys.argv[2], output=Path(sys.argv[3]),
                                   chunk_rows=500, tokenize_workers=1, threads=1), progress=False)
print(summary.rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def make_input(path: Path, n: int) -> int:
    rng = random.Random(n)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            payload = "".join(rng.choice("abcdefghij") for _ in range(64)) * (PAYLOAD_CHARS // 64)
            f.write(json.dumps({"id": f"r{i}", "text": text, "body": payload}, ensure_ascii=False) + "\n")
    return path.stat().st_size


def peak_rss_mib(bundle: Path, src: Path, out: Path) -> tuple[int, float]:
    res = subprocess.run([sys.executable, "-c", CHILD, str(bundle), str(src), str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows, kib = res.stdout.split()
    return int(rows), int(kib) / 1024


def test_peak_memory_does_not_grow_with_the_input(tiny_bundle: Path, tmp_path: Path) -> None:
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    small_bytes = make_input(small, 4_000)
    large_bytes = make_input(large, 20_000)
    assert large_bytes - small_bytes > 60 * 2**20  # 5x the rows, ~64 MiB more input
    rows_s, rss_s = peak_rss_mib(tiny_bundle, small, tmp_path / "out-small")
    rows_l, rss_l = peak_rss_mib(tiny_bundle, large, tmp_path / "out-large")
    assert (rows_s, rows_l) == (4_000, 20_000)
    # Holding the input (or the output) in memory would add at least the extra input's size.
    grew = rss_l - rss_s
    assert grew < 24, f"peak RSS {rss_s:.0f} MiB → {rss_l:.0f} MiB for {large_bytes / 2**20:.0f} MiB of input"
