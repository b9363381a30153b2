"""`sitrep bench int8-noise BUNDLE`: how much the int8 gate's verdict depends on noise in the fp32 weights.

Export keeps the int8 model whose labels agree with fp32 on ≥ 99% of dev. On a CPU without VNNI the
model that passes keeps the FFN MatMuls in fp32 between uint8 ones (sitrep/training/export.py), and the
uint8 MatMuls quantize their inputs with a scale computed per call from the tensor's range: a change
upstream, however small, can move an input across a rounding step, and the step is coarse where a few
channels carry huge activations. This command measures that: it multiplies every fp32 MatMul weight of
the shipped int8 file (`sitrep/training/fp16_weights.fp32_matmul_weights`) by 1 + ε·N(0, 1) for a few
seeds, and scores each copy as the gate does (label agreement and ΔF1 against ONNX fp32, on each dev
file) and against the shipped file itself. A control row does the same to the fp32 file: there a change
of relative size ε moves probabilities by about ε. Nothing is written into the bundle.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sitrep.bench.common import machine
from sitrep.models.bundle import ONNX_FILES, load_bundle
from sitrep.models.corpus import label_matrix, read_with_sources
from sitrep.training.export import Gates, files_below_agreement, gate_figures, passes, probs_with
from sitrep.training.fp16_weights import fp32_matmul_weights


def perturbed(src: Path, dst: Path, rel: float, seed: int) -> int:
    """Write `src` to `dst` with each fp32 MatMul weight times 1 + rel·N(0, 1). Returns how many weights."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    names = fp32_matmul_weights(model.graph)
    if not names:
        raise ValueError(f"{src}: no fp32 MatMul weight to perturb (every MatMul is quantized, or the fp32 weights "
                         "are stored fp16 / fp16+int8-residual)")
    rng = np.random.default_rng(seed)
    for name in names:
        w = numpy_helper.to_array(inits[name])
        noisy = (w * (1.0 + rel * rng.standard_normal(w.shape))).astype(np.float32)
        inits[name].CopyFrom(numpy_helper.from_array(noisy, name))
    onnx.save(model, str(dst))
    return len(names)


def run_noise(bundle_path: str | Path, data: str | Path | None = None, rel: float = 1e-6, seeds: int = 3,
              log: Any = print) -> dict[str, Any]:
    if not 0 < rel < 1:
        raise ValueError(f"--rel {rel}: give a relative noise level between 0 and 1, e.g. 1e-6")
    if seeds < 1:
        raise ValueError("--seeds must be at least 1")
    bundle = load_bundle(bundle_path)
    for key in ("onnx", "onnx-int8"):
        if not bundle.has(ONNX_FILES[key]):
            raise FileNotFoundError(f"{bundle.path}: no {ONNX_FILES[key]}; run `sitrep export {bundle.path}` first")
    fp32, int8 = bundle.onnx_file("onnx"), bundle.onnx_file("onnx-int8")
    data = data or bundle.dev_files
    examples, groups = read_with_sources(data)
    texts, y, cut = [e.text for e in examples], label_matrix(examples), bundle.thresholds
    gates = Gates()
    log(f"reference: ONNX fp32 on {len(texts)} sentences from {data}")
    ref = probs_with(bundle, fp32, texts)
    shipped = probs_with(bundle, int8, texts)
    rows: list[dict[str, Any]] = []

    def row(name: str, file: str, seed: int | None, probs: np.ndarray, base: np.ndarray) -> None:
        cmp = gate_figures(ref, probs, y, cut, groups)
        own = gate_figures(base, probs, y, cut)
        rows.append({
            "copy": name, "file": file, "seed": seed,
            "label_agreement": round(cmp["label_agreement"], 4), "macro_f1_delta": cmp["macro_f1_delta"],
            "per_file": {f: round(c["label_agreement"], 4) for f, c in cmp.get("per_file", {}).items()},
            "passes_gate": passes(cmp, gates), "failed_files": files_below_agreement(cmp, gates),
            "agreement_with_unperturbed": round(own["label_agreement"], 4),
            "max_abs_prob_diff_vs_unperturbed": float(own["max_abs_prob_diff"]),
        })
        r = rows[-1]
        log(f"  {name}: agreement with fp32 {r['label_agreement']:.4f} ({'pass' if r['passes_gate'] else 'fail'}), "
            f"with the unperturbed file {r['agreement_with_unperturbed']:.4f}, max |Δp| "
            f"{r['max_abs_prob_diff_vs_unperturbed']:.2g}")

    row("shipped int8 file", ONNX_FILES["onnx-int8"], None, shipped, shipped)
    work = Path(tempfile.mkdtemp(prefix="sitrep-int8-noise-"))
    try:
        copy = work / "noisy.onnx"
        n_weights = 0
        for seed in range(seeds):
            n_weights = perturbed(int8, copy, rel, seed)
            row(f"int8 file, fp32 weights × (1 + {rel:g}·N(0,1))", ONNX_FILES["onnx-int8"], seed,
                probs_with(bundle, copy, texts), shipped)
        perturbed(fp32, copy, rel, 0)
        row(f"control: fp32 file, MatMul weights × (1 + {rel:g}·N(0,1))", ONNX_FILES["onnx"], 0,
            probs_with(bundle, copy, texts), ref)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "bundle": {"path": str(bundle.path), "name": bundle.name, "version": bundle.version},
        "data": str(data), "n": len(texts), "rel": rel, "fp32_weights_perturbed": n_weights,
        "machine": machine(), "rows": rows,
    }


def noise_markdown(report: dict[str, Any]) -> str:
    b = report["bundle"]
    lines = [
        f"Bundle `{b['name']}` {b['version']}, {report['n']} sentences from `{report['data']}`; each noisy copy "
        f"multiplies the int8 file's {report['fp32_weights_perturbed']} fp32 MatMul weights by 1 + "
        f"{report['rel']:g}·N(0, 1). Agreement = sentences whose labels all match.",
        "",
        "| copy | seed | agreement with ONNX fp32 (per dev file) | ΔF1 vs fp32 (points) | int8 gate "
        "| agreement with the unperturbed file | max \\|Δp\\| vs the unperturbed file |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    for r in report["rows"]:
        per = "; ".join(f"{f}: {a:.2%}" for f, a in r["per_file"].items())
        gate = ("pass" if r["passes_gate"] else "fail") if r["file"] == ONNX_FILES["onnx-int8"] else "—"
        seed = "—" if r["seed"] is None else str(r["seed"])
        lines.append(f"| {r['copy']} | {seed} | {r['label_agreement']:.2%}{f' ({per})' if per else ''} | "
                     f"{100 * r['macro_f1_delta']:+.2f} | {gate} | {r['agreement_with_unperturbed']:.2%} | "
                     f"{r['max_abs_prob_diff_vs_unperturbed']:.2g} |")
    return "\n".join(lines) + "\n"
