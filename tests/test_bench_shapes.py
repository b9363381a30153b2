"""`sitrep bench shapes`: a call's cost by batch and length, and the fitted fixed cost in tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sitrep.bench.shapes import fit_call_cost, shape_batch
from sitrep.cli import app


def test_fit_recovers_overhead_and_per_token_cost() -> None:
    rows = [{"batch_size": b, "length": n, "median_ms": 2.0 + 0.3 * b * n} for b in (1, 4, 16) for n in (16, 64)]
    fit = fit_call_cost(rows)
    assert fit["overhead_ms"] == pytest.approx(2.0, abs=1e-6)
    assert fit["ms_per_token"] == pytest.approx(0.3, abs=1e-6)
    assert fit["overhead_tokens"] == pytest.approx(6.7, abs=0.05)


def test_shape_batch_is_exactly_b_by_l_with_the_specials_kept() -> None:
    ids = np.asarray([0, 11, 12, 13, 2])
    for length in (2, 3, 5, 9):
        input_ids, mask = shape_batch(ids, 3, length)
        assert input_ids.shape == mask.shape == (3, length) and mask.all()
        assert input_ids[0, 0] == 0 and input_ids[0, -1] == 2
        assert set(input_ids[0, 1:-1].tolist()) <= {11, 12, 13}


def test_cli_times_every_shape_and_writes_json(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "shapes.json"
    res = CliRunner().invoke(app, ["bench", "shapes", str(tiny_bundle), "--batch-sizes", "1,3",
                                   "--lengths", "4,12", "--repeats", "2", "--threads", "1", "--json", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [(r["batch_size"], r["length"]) for r in report["rows"]] == [(1, 4), (3, 4), (1, 12), (3, 12)]
    assert all(r["median_ms"] > 0 for r in report["rows"])
    assert set(report["fit"]) == {"overhead_ms", "ms_per_token", "overhead_tokens"}
    assert "a call's fixed cost is" in res.output


@pytest.mark.parametrize("args", [["--lengths", "1"], ["--batch-sizes", "0"], ["--lengths", "9999"],
                                  ["--runtime", "tpu"], ["--lengths", "x"]])  # fmt: skip
def test_bad_options_are_one_line_errors(tiny_bundle: Path, args: list[str]) -> None:
    res = CliRunner().invoke(app, ["bench", "shapes", str(tiny_bundle), *args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
