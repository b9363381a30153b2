"""`sitrep score` (local engine): formats in and out, globs and folders, rejects, documents, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sitrep.models.labels import LABELS
from sitrep.models.runtime import load
from sitrep.scoring.engine_local import score_local
from sitrep.scoring.job import REJECTS
from sitrep.scoring.options import ScoreError, ScoreOptions
from sitrep.scoring.output import SCORE_COLUMNS
from tests.tiny_model import assert_labels_agree

REPO = Path(__file__).resolve().parent.parent
ZWNJ = "\u200c"


def corpus_rows(tiny_data: dict[str, Path]) -> list[dict[str, str]]:
    rows = [
        json.loads(line)
        for line in tiny_data["test"].read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rows = [{"id": r["id"], "text": r["text"]} for r in rows]
    # Byte-exactness probes: Persian ZWNJ and ی/ک, Arabic ي/ك with diacritics.
    rows.append(
        {"id": "fa-zwnj", "text": f"نیروهای امنیتی گفتند دو پهپاد رهگیری شد و می{ZWNJ}گویند کسی زخمی نشد"}
    )
    rows.append({"id": "ar-diacritics", "text": "قَالَتْ وِزَارَةُ الدِّفَاعِ إنَّ ثَلاثَةَ جُنُودٍ قُتِلُوا فِي الهُجُومِ"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict], fields: tuple[str, ...] = ("id", "text")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        w.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)  # several row groups
    return path


def run(bundle: Path, inp: Path | str, out: Path, **kw) -> tuple[pa.Table, list[dict]]:
    """Score with the local engine; returns (output rows, rejects) and checks the summary's counts."""
    opts = ScoreOptions(bundle=bundle, input=str(inp), output=out, chunk_rows=kw.pop("chunk_rows", 16), **kw)
    summary = score_local(opts, progress=False)
    table = pq.read_table(out)
    rejects = [json.loads(x) for x in (out / REJECTS).read_text(encoding="utf-8").splitlines()]
    scored_rows = len(set(table["id"].to_pylist())) if opts.documents else table.num_rows
    assert summary.rows == scored_rows + len(rejects) and summary.rejects == len(rejects)
    assert summary.out_rows == table.num_rows
    return table, rejects


def test_formats_in_give_identical_rows_and_match_the_runtime(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    rows = corpus_rows(tiny_data)
    sources = {
        "jsonl": write_jsonl(tmp_path / "in.jsonl", rows),
        "csv": write_csv(tmp_path / "in.csv", rows),
        "parquet": write_parquet(tmp_path / "in.parquet", rows),
    }
    tables = {fmt: run(tiny_bundle, p, tmp_path / f"out-{fmt}")[0] for fmt, p in sources.items()}
    ref = tables["jsonl"]
    assert ref["id"].to_pylist() == [r["id"] for r in rows]  # output order is input order
    expected_columns = ["id", "labels", *SCORE_COLUMNS, "truncated", "model_name", "model_version"]
    assert ref.column_names == expected_columns
    assert [f"score_{x}" for x in LABELS] == list(SCORE_COLUMNS)
    for fmt, t in tables.items():
        assert t.schema.equals(ref.schema), fmt
        assert t["id"].to_pylist() == ref["id"].to_pylist(), fmt
        assert t["labels"].to_pylist() == ref["labels"].to_pylist(), fmt
        for col in SCORE_COLUMNS:
            np.testing.assert_allclose(t[col].to_numpy(), ref[col].to_numpy(), atol=1e-6, err_msg=fmt)
    # The scores are the runtime's own calibrated probabilities and thresholded labels.
    clf = load(tiny_bundle, "onnx-int8")
    direct = clf.classify([r["text"] for r in rows], batch_size=8)
    got = np.stack([ref[c].to_numpy() for c in SCORE_COLUMNS], axis=1)
    np.testing.assert_allclose(got, direct.probs, atol=2e-5)
    assert_labels_agree(ref["labels"].to_pylist(), direct.labels, direct.probs, clf.thresholds)
    assert ref["truncated"].to_pylist() == direct.truncated
    assert set(ref["model_name"].to_pylist()) == {"tiny"} and set(ref["model_version"].to_pylist()) == {
        "0.0.1"
    }


def test_jsonl_output_with_text_keeps_arabic_and_persian_bytes(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    rows = corpus_rows(tiny_data)
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    pq_table, _ = run(tiny_bundle, src, tmp_path / "out-pq", include_text=True)
    out = tmp_path / "out-jsonl"
    opts = ScoreOptions(
        bundle=tiny_bundle,
        input=str(src),
        output=out,
        output_format="jsonl",
        chunk_rows=16,
        include_text=True,
    )
    score_local(opts, progress=False)
    shards = sorted(out.glob("part-*.jsonl"))
    assert len(shards) == -(-len(rows) // 16)
    lines = [json.loads(x) for p in shards for x in p.read_text(encoding="utf-8").splitlines()]
    assert [x["text"] for x in lines] == [r["text"] for r in rows] == pq_table["text"].to_pylist()
    by_id = {x["id"]: x for x in lines}
    assert ZWNJ in by_id["fa-zwnj"]["text"] and "ی" in by_id["fa-zwnj"]["text"]
    raw = b"".join(p.read_bytes() for p in shards)
    assert rows[-1]["text"].encode("utf-8") in raw  # written as UTF-8, not \u escapes
    assert list(lines[0]) == pq_table.column_names
    assert [x["labels"] for x in lines] == pq_table["labels"].to_pylist()
    np.testing.assert_allclose(
        [x["score_casualty"] for x in lines], pq_table["score_casualty"].to_numpy(), atol=1e-7
    )


def test_folders_and_globs_are_read_whole_and_in_path_order(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    rows = corpus_rows(tiny_data)
    root = tmp_path / "archive"
    write_jsonl(root / "2024-01" / "a.jsonl", rows[:10])
    write_csv(root / "2024-01" / "b.csv", rows[10:25])
    write_parquet(root / "2024-02" / "c.parquet", rows[25:40])
    write_jsonl(root / "2024-02" / "d.ndjson", rows[40:])
    write_jsonl(root / "_staging" / "skip.jsonl", [{"id": "ignored", "text": "not an input"}])
    (root / "README.txt").write_text("not an input")
    t_dir, rej = run(tiny_bundle, root, tmp_path / "out-dir")
    assert t_dir["id"].to_pylist() == [r["id"] for r in rows] and rej == []
    t_glob, _ = run(tiny_bundle, f"{root}/2024-0*/*.*[lnv]", tmp_path / "out-glob")  # .jsonl .csv .ndjson
    expected = [r["id"] for r in rows[:25] + rows[40:]]
    assert t_glob["id"].to_pylist() == expected
    with pytest.raises(ScoreError, match="matches no files"):
        run(tiny_bundle, f"{root}/*.xlsx", tmp_path / "out-none")
    with pytest.raises(ScoreError, match="no such file"):
        run(tiny_bundle, tmp_path / "missing.jsonl", tmp_path / "out-missing")


def test_bad_rows_go_to_rejects_with_reasons(tiny_bundle: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "in" / "a.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text(
        "\n".join([
            '{"id": "ok-1", "text": "The ministry said two rockets hit the base."}',
            '{"text": "no id field"}',
            '{"id": "", "text": "empty id"}',
            '{"id": "e-1", "text": "   "}',
            '{"id": "n-1", "text": 42}',
            '{"id": "n-2"}',
            '{"id": [1], "text": "list id"}',
            "{not json",
            "",
            '["an", "array"]',
            '{"id": 17, "text": "an integer id is fine"}',
        ]) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    bad_csv = tmp_path / "in" / "b.csv"
    bad_csv.write_text('id,text\nc-1,fine\nc-2,"has, a comma",extra\nc-3,\n,no id\nc-4,"multi\nline"\n')
    write_parquet(tmp_path / "in" / "c.parquet", [{"id": "p-1", "text": "ok"}, {"id": None, "text": "x"},
                                                   {"id": "p-2", "text": None}])  # fmt: skip
    table, rejects = run(tiny_bundle, tmp_path / "in", tmp_path / "out", chunk_rows=4)
    assert table["id"].to_pylist() == ["ok-1", "17", "c-1", "c-4", "p-1"]
    got = sorted(((r["id"] or ""), r["reason"]) for r in rejects)
    assert got == sorted([
        ("", "missing_id"), ("", "missing_id"), ("e-1", "empty_text"), ("n-1", "non_text"),
        ("n-2", "missing_text"), ("[1]", "bad_id"), ("", "invalid_json"), ("", "invalid_json"),  # JSONL
        ("", "invalid_csv_row"), ("c-3", "empty_text"), ("", "missing_id"),  # CSV
        ("", "missing_id"), ("p-2", "missing_text"),  # Parquet
    ])  # fmt: skip
    assert len(rejects) == 13
    by_reason = {}
    for r in rejects:
        by_reason.setdefault(r["reason"], []).append(r)
    malformed = next(r for r in by_reason["invalid_json"] if r["value"] == "{not json")
    assert malformed["source"] == str(jsonl.resolve()) and malformed["line"] == 8 and malformed["row"] == 7
    assert (
        by_reason["invalid_csv_row"][0]["line"] == 3 and "got 3" in by_reason["invalid_csv_row"][0]["detail"]
    )
    assert all(r["detail"] and r["source"] for r in rejects)


def test_documents_are_split_with_offsets(tiny_bundle: Path, tmp_path: Path) -> None:
    docs = [
        {"id": "en", "text": "Dr. Ali said 3.5 tons fell. No one was hurt!\nThe U.S. said it struck back."},
        {"id": "ar", "text": "قالت الوزارة إن صاروخين سقطا؟ لم يصب أحد. "},
        {"id": "fa", "text": f"سپاه اعلام کرد پهپاد رهگیری شد. دو نفر زخمی{ZWNJ}اند."},
        {"id": "none", "text": "\u200b"},  # not whitespace, but no sentence in it
    ]
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    table, rejects = run(tiny_bundle, src, tmp_path / "out", documents=True, include_text=True)
    assert table.column_names[:5] == ["id", "sentence_index", "start", "end", "text"]
    out = table.to_pylist()
    texts = {d["id"]: d["text"] for d in docs}
    for r in out:
        assert texts[r["id"]][r["start"] : r["end"]] == r["text"]
    assert [(r["id"], r["sentence_index"]) for r in out] == [
        ("en", 0), ("en", 1), ("en", 2), ("ar", 0), ("ar", 1), ("fa", 0), ("fa", 1),
    ]  # fmt: skip
    assert out[0]["text"] == "Dr. Ali said 3.5 tons fell."
    assert ZWNJ in out[-1]["text"]
    assert [(r["id"], r["reason"]) for r in rejects] == [("none", "no_sentences")]
    clf = load(tiny_bundle, "onnx-int8")
    direct = clf.classify([r["text"] for r in out])
    np.testing.assert_allclose(table["score_claim"].to_numpy(), direct.probs[:, 0], atol=2e-5)


def test_clear_errors_before_any_work(tiny_bundle: Path, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [{"doc": "1", "body": "x"}], fields=("doc", "body"))
    with pytest.raises(ScoreError, match=r"no column 'id', 'text' \(columns: doc, body\)"):
        run(tiny_bundle, src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    table, _ = run(tiny_bundle, src, tmp_path / "out", id_column="doc", text_column="body")
    assert table["id"].to_pylist() == ["1"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ScoreError, match="not a `sitrep score` output"):
        run(tiny_bundle, src, foreign, id_column="doc", text_column="body", overwrite=True)
    assert (foreign / "notes.txt").exists()  # never deleted, even with --overwrite
    with pytest.raises(ScoreError, match="inside the input folder"):
        run(tiny_bundle, tmp_path, tmp_path / "nested-out")
    with pytest.raises(ScoreError, match="inside the output folder"):
        run(tiny_bundle, f"{tmp_path}/out/*.parquet", tmp_path / "out")
    with pytest.raises(ScoreError, match="--output-format"):
        ScoreOptions(bundle=tiny_bundle, input=str(src), output=tmp_path / "x", output_format="xlsx")


def test_cli_score_and_errors(tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from sitrep.cli import app
    runner = CliRunner()
    src = write_jsonl(tmp_path / "in.jsonl", [*corpus_rows(tiny_data)[:20], {"id": "x", "text": ""}])
    out = tmp_path / "out"
    res = runner.invoke(app, ["score", str(tiny_bundle), "-i", str(src), "-o", str(out), "-q",
                              "--summary-json", str(tmp_path / "s.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "21 input rows → 20 output rows" in res.output and "1 rejects" in res.output
    assert json.loads((tmp_path / "s.json").read_text())["rejects"] == 1
    assert pq.read_table(out).num_rows == 20
    res = runner.invoke(app, ["score", str(tiny_bundle), "-i", str(src), "-o", str(out), "--documents", "-q"])
    assert res.exit_code == 2 and "holds a different job" in res.output and "options.documents" in res.output
    res = runner.invoke(app, ["score", str(tiny_bundle), "-i", str(src), "-o", str(tmp_path / "o2"),
                              "--runtime", "tpu"])  # fmt: skip
    assert res.exit_code == 2 and "--runtime must be one of" in res.output
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        res = runner.invoke(app, ["score", str(tiny_bundle), "-i", str(src), "-o", str(tmp_path / "o3"),
                                  "--runtime", "cuda"])  # fmt: skip
        assert res.exit_code == 2 and "CUDA" in res.output
        assert not (tmp_path / "o3").exists()


def test_scoring_does_not_import_torch(tiny_bundle: Path, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "1", "text": "The group claimed the attack."}])
    code = (
        "import sys; from pathlib import Path\n"
        "from sitrep.scoring.engine_local import score_local\n"
        "from sitrep.scoring.options import ScoreOptions\n"
        f"score_local(ScoreOptions(bundle=Path({str(tiny_bundle)!r}), input={str(src)!r}, "
        f"output=Path({str(tmp_path / 'out')!r}), documents=True), progress=False)\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_batch_size_defaults_by_where_the_model_runs(tiny_bundle: Path, tmp_path: Path) -> None:
    from sitrep.scoring.options import CPU_BATCH_SIZE, GPU_BATCH_SIZE, default_batch_size
    from sitrep.scoring.scorer import ChunkScorer

    assert (default_batch_size(False), default_batch_size(True)) == (CPU_BATCH_SIZE, GPU_BATCH_SIZE) == (32, 256)
    for runtime in ("onnx-int8", "onnx"):
        clf = load(tiny_bundle, runtime)
        assert not clf.on_gpu
        assert ChunkScorer(clf).batch_size == CPU_BATCH_SIZE
        assert ChunkScorer(clf, batch_size=2048).batch_size == 2048
    torch_cpu = load(tiny_bundle, "torch", device="cpu")
    assert not torch_cpu.on_gpu and ChunkScorer(torch_cpu).batch_size == CPU_BATCH_SIZE
    with pytest.raises(ScoreError, match="at least 1"):
        ScoreOptions(bundle=tmp_path, input="in.jsonl", output=tmp_path / "out", batch_size=0)


def test_lone_surrogate_rows_are_rejects_and_the_job_completes(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """Issue 14, defect 1: `"\\ud800"` is valid JSON but no text; it used to crash the tokenizer, every rerun."""
    good = corpus_rows(tiny_data)[:5]
    src = tmp_path / "in.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in good]
    lines.insert(2, '{"id": "x", "text": "\\ud800 lone"}')  # the escape, exactly as a producer writes it
    lines.insert(4, '{"id": "y\\udc00", "text": "fine text"}')
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for documents in (False, True):
        table, rejects = run(tiny_bundle, src, tmp_path / f"out-{documents}", documents=documents)
        assert sorted(set(table["id"].to_pylist())) == sorted(r["id"] for r in good)
        assert [(r["id"], r["reason"]) for r in rejects] == [("x", "invalid_unicode"), ("y\ufffd", "invalid_unicode")]
        assert "lone surrogate" in rejects[0]["detail"] and rejects[0]["value"] == "\ufffd lone"


def test_disk_full_is_one_line_and_the_rerun_resumes(
    tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14, defect 4: ENOSPC while writing output → exit 2, one line naming the file and the free space."""
    import errno
    import os

    from sitrep.cli import app

    src = write_jsonl(tmp_path / "in.jsonl", corpus_rows(tiny_data)[:40])
    out = tmp_path / "out"
    real_fsync = os.fsync
    shards = 0

    def fsync(fd: int) -> None:  # the third output shard hits a full disk
        nonlocal shards
        if "part-" in os.readlink(f"/proc/self/fd/{fd}"):
            shards += 1
            if shards == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    cmd = ["score", str(tiny_bundle), "-i", str(src), "-o", str(out), "-q", "--chunk-rows", "8"]
    res = CliRunner().invoke(app, cmd)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: disk full while writing "), res.output
    assert str(out / "part-000002.parquet") in lines[0] and "MiB free" in lines[0]
    assert "Traceback" not in res.output
    assert not list(out.glob(".*.tmp"))  # the partial shard was removed
    monkeypatch.setattr(os, "fsync", real_fsync)
    res = CliRunner().invoke(app, cmd)
    assert res.exit_code == 0, res.output
    assert pq.read_table(out).num_rows == 40
