"""`--engine ray` on a local Ray instance: the same rows and rejects as the local engine, row for row."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sitrep.models.bundle import load_bundle
from sitrep.scoring.engine_local import score_local
from sitrep.scoring.job import MANIFEST, REJECTS
from sitrep.scoring.options import ScoreError, ScoreOptions
from sitrep.scoring.output import SCORE_COLUMNS
from tests.tiny_model import assert_labels_agree

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def corpus(tiny_data: dict[str, Path]) -> list[dict]:
    rows = []
    for split in ("test", "dev"):
        for line in tiny_data[split].read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            rows.append({"id": r["id"], "text": r["text"]})
    return rows


def both_engines(
    bundle: Path, src: Path, tmp: Path, **kw
) -> tuple[pa.Table, pa.Table, list[dict], list[dict]]:
    outs = {}
    for engine in ("local", "ray"):
        opts = ScoreOptions(bundle=bundle, input=str(src), output=tmp / f"out-{engine}", chunk_rows=32, **kw)
        if engine == "local":
            summary = score_local(opts, progress=False)
        else:
            from sitrep.scoring.engine_ray import score_ray

            summary = score_ray(opts, actors=1, progress=False)
        table = pq.read_table(opts.output)
        rejects = [json.loads(x) for x in (opts.output / REJECTS).read_text(encoding="utf-8").splitlines()]
        assert summary.out_rows == table.num_rows and summary.rejects == len(rejects), engine
        outs[engine] = (table, rejects, summary)
    keys = [("id", "ascending")] + ([("sentence_index", "ascending")] if kw.get("documents") else [])
    (lt, lr, ls), (rt, rr, rs) = outs["local"], outs["ray"]
    assert ls.rows == rs.rows
    return lt.sort_by(keys), rt.sort_by(keys), lr, rr


def assert_same_rows(local: pa.Table, ray_: pa.Table, thresholds: list[float]) -> None:
    assert ray_.schema.equals(local.schema)
    assert ray_.num_rows == local.num_rows
    for col in local.column_names:
        if col in SCORE_COLUMNS:
            # int8's dynamic activation scales depend on which sentences share a batch, and Ray cuts its
            # blocks where it likes: the same sentence may differ by ~1e-5 between the engines
            np.testing.assert_allclose(ray_[col].to_numpy(), local[col].to_numpy(), atol=5e-5, err_msg=col)
        elif col == "labels":
            probs = np.stack([local[c].to_numpy() for c in SCORE_COLUMNS], axis=1)
            assert_labels_agree(ray_[col].to_pylist(), local[col].to_pylist(), probs, thresholds)
        else:
            assert ray_[col].to_pylist() == local[col].to_pylist(), col


def reject_keys(rejects: list[dict]) -> list[tuple]:
    return sorted((r["id"] or "", r["reason"], r["source"], r["value"] or "") for r in rejects)


@pytest.mark.timeout(300)
def test_ray_engine_matches_local_engine_row_for_row(
    local_ray: None, tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    rows = corpus(tiny_data)
    src = tmp_path / "in"
    src.mkdir()
    n = len(rows) // 3
    with (src / "a.jsonl").open("w", encoding="utf-8") as f:
        for r in rows[:n]:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.write('{"id": "bad-1", "text": ""}\nnot json\n{"text": "no id"}\n')
    pa_csv = pa.Table.from_pylist(rows[n : 2 * n])
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa_csv, src / "b.csv")
    pq.write_table(pa.Table.from_pylist([*rows[2 * n :], {"id": "bad-2", "text": None}]), src / "c.parquet")
    local, ray_, lrej, rrej = both_engines(tiny_bundle, src, tmp_path, include_text=True)
    assert local.num_rows == len(rows)
    assert_same_rows(local, ray_, load_bundle(tiny_bundle).thresholds)
    assert len(lrej) == 4 and reject_keys(rrej) == reject_keys(lrej)
    manifest = json.loads((tmp_path / "out-ray" / MANIFEST).read_text())
    assert manifest["done"]["rows"] == len(rows) + 4 and manifest["job"]["engine"] == "ray"
    # A rerun finds the job done; another job in the same folder is refused.
    again = ScoreOptions(bundle=tiny_bundle, input=str(src), output=tmp_path / "out-ray", chunk_rows=32,
                         include_text=True)  # fmt: skip
    from sitrep.scoring.engine_ray import score_ray

    assert score_ray(again, progress=False).already_done
    with pytest.raises(ScoreError, match="leaves no CPU"):  # would starve the readers and hang
        score_ray(
            ScoreOptions(bundle=tiny_bundle, input=str(src), output=tmp_path / "o2"), actors=2, progress=False
        )
    with pytest.raises(ScoreError, match="another job"):
        score_ray(
            ScoreOptions(bundle=tiny_bundle, input=str(src), output=tmp_path / "out-ray"), progress=False
        )


@pytest.mark.timeout(300)
def test_ray_engine_documents_match_local(
    local_ray: None, tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    rows = corpus(tiny_data)
    docs = [{"id": f"doc-{i}", "text": " ".join(r["text"] for r in rows[i : i + 4])} for i in range(0, 80, 4)]
    docs.append({"id": "doc-empty", "text": "\u200b"})
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    local, ray_, lrej, rrej = both_engines(tiny_bundle, src, tmp_path, documents=True)
    assert local.num_rows > len(docs)
    assert_same_rows(local, ray_, load_bundle(tiny_bundle).thresholds)
    assert [r["reason"] for r in rrej] == [r["reason"] for r in lrej] == ["no_sentences"]
