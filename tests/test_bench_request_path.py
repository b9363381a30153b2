"""`sitrep bench request-path`: a single-sentence request's stages, timed in process."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sitrep.bench.request_path import STAGES
from sitrep.cli import app


def test_every_stage_is_timed(tiny_bundle: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "path.json"
    res = CliRunner().invoke(app, ["bench", "request-path", str(tiny_bundle), "--data", str(tiny_data["test"]),
                                   "--requests", "6", "--threads", "1", "--json", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [r["stage"] for r in report["rows"]] == list(STAGES)
    by = {r["stage"]: r for r in report["rows"]}
    assert all(0 < r["median_ms"] <= r["p90_ms"] for r in report["rows"])
    assert by["model"]["median_ms"] < report["total_median_ms"]
    assert 0 < report["not_model_share"] < 1 and report["mean_tokens"] > 2
    assert "everything but the model call" in res.output


def test_bad_input_is_a_one_line_error(tiny_bundle: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "request-path", str(tiny_bundle), "--data", str(tmp_path / "no.jsonl")])
    assert res.exit_code == 2 and "no such data file" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["bench", "request-path", str(tiny_bundle), "--runtime", "gpu9"])
    assert res.exit_code == 2 and "--runtime" in res.output
