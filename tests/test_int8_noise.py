"""`sitrep bench int8-noise`: noisy copies of the int8 file's fp32 weights, scored as the gate scores them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sitrep.models.bundle import load_bundle
from sitrep.training.export import QuantRecipe


@pytest.fixture(scope="module")
def ffn_fp32_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle whose int8 file keeps every FFN MatMul fp32 (export's last uint8 rung), its
    fp32 weights stored plainly (the tiny export may have kept the fp16+int8-residual storage)."""
    from sitrep.models.bundle import write_bundle_manifest
    from sitrep.training.export import ffn_matmuls, optimize_graph, quantize

    copy = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("noise") / "b")
    bundle = load_bundle(copy)
    opt = copy / "model.opt.onnx"
    optimize_graph(bundle, bundle.onnx_file("onnx"), opt)
    into, outof = ffn_matmuls(opt)
    quantize(opt, bundle.onnx_file("onnx-int8"), QuantRecipe("test", per_channel=True), into + outof)
    opt.unlink()
    write_bundle_manifest(copy, load_bundle(copy, verify=False).manifest)
    return copy


def test_perturbed_scales_each_fp32_weight_by_the_noise(ffn_fp32_bundle: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from sitrep.bench.int8_noise import perturbed
    from sitrep.training.fp16_weights import fp32_matmul_weights

    src = ffn_fp32_bundle / "onnx" / "model.int8.onnx"
    n = perturbed(src, tmp_path / "noisy.onnx", 1e-3, seed=0)
    before = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(src)).graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "noisy.onnx")).graph.initializer}
    names = fp32_matmul_weights(onnx.load(str(src)).graph)
    assert n == len(names) > 0
    for name in names:
        w, w2 = before[name], after[name]
        ratio = (w2[w != 0] / w[w != 0]) - 1.0
        assert 0.5e-3 < ratio.std() < 2e-3 and abs(ratio.mean()) < 5e-4, name
    untouched = [k for k in before if k not in names]
    assert untouched and all(np.array_equal(before[k], after[k]) for k in untouched)


def test_int8_noise_rows_and_control(ffn_fp32_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitrep.cli import app

    out = tmp_path / "noise.json"
    result = CliRunner().invoke(app, ["bench", "int8-noise", str(ffn_fp32_bundle), "--seeds", "2", "--rel", "1e-3",
                                      "--json", str(out), "--markdown", str(tmp_path / "noise.md")])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r["seed"] for r in rows] == [None, 0, 1, 0] and report["fp32_weights_perturbed"] > 0
    shipped, noisy, control = rows[0], rows[1:3], rows[3]
    assert shipped["agreement_with_unperturbed"] == 1.0 and shipped["max_abs_prob_diff_vs_unperturbed"] == 0.0
    assert all(r["max_abs_prob_diff_vs_unperturbed"] > 0 for r in noisy)  # the noise reached the outputs
    assert 0 < control["max_abs_prob_diff_vs_unperturbed"] < 0.05  # fp32: a 1e-3 change stays small
    assert control["file"] == "onnx/model.onnx" and "| control: fp32 file" in (tmp_path / "noise.md").read_text()
    assert isinstance(shipped["passes_gate"], bool)


def test_int8_noise_errors_are_one_line(ffn_fp32_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitrep.cli import app

    bad = CliRunner().invoke(app, ["bench", "int8-noise", str(ffn_fp32_bundle), "--rel", "2"])
    assert bad.exit_code == 2 and "relative noise level" in bad.output and "Traceback" not in bad.output
    missing = CliRunner().invoke(app, ["bench", "int8-noise", str(tmp_path)])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
