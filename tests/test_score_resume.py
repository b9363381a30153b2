"""Exactly-once: a `sitrep score` process killed with SIGKILL and rerun; every crash window of a commit."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sitrep.scoring.engine_local import score_local
from sitrep.scoring.job import COMMITS, MANIFEST, REJECTS
from sitrep.scoring.options import ScoreError, ScoreOptions
from tests.tiny_model import WORDS

REPO = Path(__file__).resolve().parent.parent


def make_input(path: Path, n: int, seed: int = 0) -> tuple[set[str], set[str]]:
    """n short rows; every 97th is a reject (empty text). Returns (good ids, rejected ids)."""
    rng = random.Random(seed)
    good, bad = set(), set()
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            rid = f"r{i:06d}"
            if i % 97 == 5:
                text = " "
                bad.add(rid)
            else:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
                good.add(rid)
            f.write(json.dumps({"id": rid, "text": text}, ensure_ascii=False) + "\n")
    return good, bad


def committed_chunks(out: Path) -> int:
    p = out / COMMITS
    return p.read_bytes().count(b"\n") if p.exists() else 0


def score_cmd(bundle: Path, src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sitrep.scoring.cli", "score", str(bundle), "-i", str(src), "-o", str(out),
            "--chunk-rows", "250", "--batch-size", "64", "--threads", "1", "-q"]  # fmt: skip


def kill_after(cmd: list[str], min_commits: int, extra_delay: float, timeout: float = 120) -> bool:
    """Start the job, SIGKILL it once `min_commits` chunks are committed (+ a delay). False if it finished."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = Path(cmd[cmd.index("-o") + 1])
    deadline = time.monotonic() + timeout
    while committed_chunks(out) < min_commits:
        if proc.poll() is not None:
            raise AssertionError(f"finished before it could be killed: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.01)
    time.sleep(extra_delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def read_output(out: Path) -> tuple[list[str], list[str]]:
    ids = pq.read_table(out, columns=["id"])["id"].to_pylist()
    rejects = [json.loads(x)["id"] for x in (out / REJECTS).read_text(encoding="utf-8").splitlines()]
    return ids, rejects


def test_sigkill_mid_run_then_rerun_is_exactly_once(tiny_bundle: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    good, bad = make_input(src, 12_000)
    out = tmp_path / "out"
    cmd = score_cmd(tiny_bundle, src, out)
    assert kill_after(cmd, min_commits=3, extra_delay=0.0)
    first = committed_chunks(out)
    assert kill_after(cmd, min_commits=first + 4, extra_delay=0.137)  # likely mid-commit this time
    assert 0 < committed_chunks(out) < 48
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ids, rejects = read_output(out)
    assert len(ids) == len(set(ids)) == len(good) and set(ids) == good
    assert len(rejects) == len(set(rejects)) == len(bad) and set(rejects) == bad
    commits = [json.loads(x) for x in (out / COMMITS).read_text().splitlines()]
    assert [c["chunk"] for c in commits[:-1]] == list(range(48)) and commits[-1]["done"]
    assert sum(c["n_rows"] for c in commits[:-1]) == 12_000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in out.glob("part-*")) == sorted(c["shard"] for c in commits[:-1])
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)  # nothing left to do
    assert res.returncode == 0 and "complete already" in res.stderr
    assert read_output(out) == (ids, rejects)


def test_every_crash_window_of_a_commit_recovers(tiny_bundle: Path, tmp_path: Path) -> None:
    """Rebuild, by hand, the states a crash can leave between the steps of a commit, and resume each."""
    src = tmp_path / "in.jsonl"
    make_input(src, 1_000, seed=1)
    opts = ScoreOptions(bundle=tiny_bundle, input=str(src), output=tmp_path / "ref", chunk_rows=100)
    score_local(opts, progress=False)
    ref = read_output(opts.output)
    ref_scores = pq.read_table(opts.output).sort_by("id")
    lines = (opts.output / COMMITS).read_bytes().splitlines(keepends=True)
    commits = [json.loads(x) for x in lines[:-1]]
    for window in ("shard renamed", "rejects appended", "torn commit line", "before done"):
        out = tmp_path / window.replace(" ", "-")
        shutil.copytree(opts.output, out)
        keep = 6  # chunks 0..5 committed; chunk 6 was being committed when the process died
        log = b"".join(lines[:keep])
        if window == "torn commit line":
            log += lines[keep][: len(lines[keep]) // 2]
        if window == "before done":
            log = b"".join(lines[:-1])
        (out / COMMITS).write_bytes(log)
        if window != "before done":
            for c in commits[keep + 1 :]:
                if c["shard"]:
                    (out / c["shard"]).unlink()
            (out / f".part-{keep + 1:06d}.parquet.tmp").write_bytes(b"partial")
            if window == "shard renamed":  # the rejects of chunk 6 were not appended yet
                with (out / REJECTS).open("r+b") as f:
                    f.truncate(commits[keep - 1]["rejects_end"])
        cont = ScoreOptions(bundle=tiny_bundle, input=str(src), output=out, chunk_rows=100)
        summary = score_local(cont, progress=False)
        assert summary.resumed_rows == (1000 if window == "before done" else 600), window
        assert read_output(out) == ref, window
        table = pq.read_table(out).sort_by("id")
        assert table.equals(ref_scores), window


def test_changed_input_or_options_are_refused_and_overwrite_starts_over(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    make_input(src, 300)
    out = tmp_path / "out"
    opts = ScoreOptions(bundle=tiny_bundle, input=str(src), output=out, chunk_rows=100)
    score_local(opts, progress=False)
    with src.open("a", encoding="utf-8") as f:
        f.write('{"id": "late", "text": "appended after the job started"}\n')
    with pytest.raises(ScoreError, match=r"input .*in\.jsonl changed"):
        score_local(opts, progress=False)
    with pytest.raises(ScoreError, match=r"options\.chunk_rows: 100 → 50"):
        score_local(
            ScoreOptions(bundle=tiny_bundle, input=str(src), output=out, chunk_rows=50), progress=False
        )
    manifest = json.loads((out / MANIFEST).read_text())
    again = ScoreOptions(bundle=tiny_bundle, input=str(src), output=out, chunk_rows=100, overwrite=True)
    summary = score_local(again, progress=False)
    assert summary.rows == 301 and summary.resumed_rows == 0
    assert json.loads((out / MANIFEST).read_text())["job"]["inputs"] != manifest["job"]["inputs"]
    assert "late" in read_output(out)[0]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_resuming_from_any_chunk_reads_exactly_the_rest(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the end cursor of every chunk, the reader yields exactly the chunks that followed it."""
    import pyarrow as pa

    from sitrep.scoring import reader

    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", 256)  # many CSV blocks, malformed rows in several
    monkeypatch.setattr(reader, "PARQUET_BATCH_ROWS", 4)
    rows = [{"id": f"r{i}", "text": "" if i % 7 == 3 else f"sentence number {i}"} for i in range(60)]
    for part, chunk in enumerate((rows[:25], rows[25:26], rows[26:])):
        path = tmp_path / f"part{part}.{fmt}"
        if fmt == "jsonl":
            lines = [json.dumps(r) for r in chunk]
            lines[len(lines) // 2 : len(lines) // 2] = ["", "{broken"]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        elif fmt == "csv":
            body = [f'{r["id"]},"{r["text"]}"' for r in chunk]
            body[1:1] = ["x,y,z"]
            body[len(body) // 2 : len(body) // 2] = ['bad,"multi\nline",extra', "lonely"]
            path.write_text("id,text\n" + "\n".join(body) + "\n", encoding="utf-8")
        else:
            pq.write_table(pa.Table.from_pylist(chunk), path, row_group_size=5)
    files = reader.discover(tmp_path)

    def flat(chunks: list[reader.Chunk]) -> list[tuple]:
        return [
            (
                c.index,
                c.start_row,
                c.end,
                [r.id for r in c.good],
                [(j.id, j.reason, j.line) for j in c.rejects],
            )
            for c in chunks
        ]

    chunks = list(reader.read_chunks(files, "id", "text", 3))
    assert sum(c.n_rows for c in chunks) == 60 + {"jsonl": 3, "csv": 9, "parquet": 0}[fmt]
    for k, c in enumerate(chunks):
        rest = list(reader.read_chunks(files, "id", "text", 3, c.end, k + 1, c.start_row + c.n_rows))
        assert flat(rest) == flat(chunks[k + 1 :]), (fmt, k)
    # The same input always gives the same chunks. (The streaming CSV parser reports malformed rows when it
    # parses ahead, at a moment that varies: interleaved with the good rows, some reads differed.)
    for _ in range(40):
        assert flat(list(reader.read_chunks(files, "id", "text", 3))) == flat(chunks), fmt
    if fmt == "csv":  # malformed rows after each file's good rows, in line order
        kinds = [[j.reason for j in c.rejects] for c in chunks]
        assert kinds[0] == [] and [j.line for c in chunks for j in c.rejects if j.reason == "invalid_csv_row"][:3] == [3, 15, 16]


def test_a_csv_cursor_with_malformed_rows_already_reported_never_reports_them_twice(tmp_path: Path) -> None:
    """A cursor past some malformed rows and some good ones (what a reader that interleaved them wrote):
    resuming, and resuming again from any chunk after that, reports every remaining row exactly once."""
    from sitrep.scoring import reader

    body = ["r0,a", "x,y,z", "r1,b", "r2,c", "u,v,w", "r3,d", "r4,e"]
    (tmp_path / "in.csv").write_text("id,text\n" + "\n".join(body) + "\n", encoding="utf-8")
    files = reader.discover(tmp_path)
    start = reader.Cursor(0, reader.Position(row=2, bad=1))  # r0, r1 and the first malformed row were reported
    first = list(reader.read_chunks(files, "id", "text", 1, start))
    seen = [r.id for c in first for r in c.good] + [j.line for c in first for j in c.rejects]
    assert seen == ["r2", "r3", "r4", 6]
    for k, c in enumerate(first):
        again = list(reader.read_chunks(files, "id", "text", 1, c.end, k + 1))
        rest = [r.id for c2 in again for r in c2.good] + [j.line for c2 in again for j in c2.rejects]
        assert rest == seen[k + 1 :], k
