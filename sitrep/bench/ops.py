"""`sitrep bench ops`: where the ONNX model's own time goes, by operator, at one batch size.

ONNX Runtime's profiler times every kernel while the bundle's ONNX file runs single-sentence (or
`--batch-size`) calls on real sentences; the report sums the kernel times by operator type and, for an int8
file exported with the outlier split (sitrep/training/outlier_split.py), gives the share of the split's own
small ops (the mask `Mul`, the `Gather` of the outlier channels, the thin fp32 `MatMul` and the `Add` that
recombines): at batch 1 their fixed cost per call is what the split costs beyond its FLOPs; for a file exported
with SmoothQuant instead (sitrep/training/smooth_quant.py), the share of its one `Mul` per input. The profiler adds
its own overhead, so the report gives shares of the kernel time, not latencies (`sitrep bench request-path` and
`sitrep bench models` time the calls).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sitrep.bench.common import corpus_sentences, machine, sample_sentences
from sitrep.training.outlier_split import is_split_node
from sitrep.training.smooth_quant import is_smooth_node


def kernel_times(events: list[dict[str, Any]], skip_runs: int = 0) -> tuple[Counter, Counter, Counter]:
    """(µs by op type, kernel count by op type, µs by part: 'outlier split', 'smoothing' or 'model') from a profile.

    `skip_runs`: leave out the kernels of the first runs (warm-up), which end where their `model_run` ends.
    """
    runs = sorted(e.get("ts", 0) + e.get("dur", 0) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    start = runs[skip_runs - 1] if 0 < skip_runs <= len(runs) else -1
    by_op: Counter = Counter()
    count: Counter = Counter()
    by_part: Counter = Counter()
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e.get("ts", 0) < start:
            continue
        node = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "?")
        by_op[op] += e["dur"]
        count[op] += 1
        by_part["outlier split" if is_split_node(node) else "smoothing" if is_smooth_node(node) else "model"] += e["dur"]
    return by_op, count, by_part


def run_ops(
    bundle: Path, runtime: str = "onnx-int8", data: Path = Path("data/test.jsonl"), sentences: int = 200,
    batch_size: int = 1, threads: int | None = None,
) -> dict[str, Any]:
    """Profile the bundle's ONNX file on `sentences` sentences, batched as the CPU runtime batches them
    (length buckets, cut where the padding saved pays for a call); the first call is a warm-up, left out."""
    from sitrep.models.bundle import BundleError, load_bundle
    from sitrep.models.encoding import CALL_OVERHEAD_TOKENS, TextEncoder, padded_batches
    from sitrep.models.runtime import cpu_session, session_options

    if runtime not in ("onnx-int8", "onnx"):
        raise ValueError("--runtime must be onnx-int8 or onnx (the CPU ONNX files)")
    if sentences < 1 or batch_size < 1:
        raise ValueError("--sentences and --batch-size must be at least 1")
    b = load_bundle(bundle, verify=False)
    path = b.onnx_file(runtime)
    if not path.is_file():
        raise BundleError(f"{bundle}: no {path.name} (run `sitrep export {bundle}`)")
    encoder = TextEncoder.for_bundle(b)
    texts = sample_sentences(corpus_sentences(data), sentences)
    encoded = encoder.encode(texts)
    batches = list(padded_batches(encoder, encoded, batch_size, overhead_tokens=CALL_OVERHEAD_TOKENS))
    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ops")
        session = cpu_session(path, opts)
        names = {i.name for i in session.get_inputs()}
        # the first call again up front: a warm-up, left out of the sums (`skip_runs=1`)
        for _, ids, mask in tqdm([batches[0], *batches], desc="calls", unit="call", dynamic_ncols=True):
            session.run(["logits"], {k: v for k, v in {"input_ids": ids, "attention_mask": mask}.items() if k in names})
        events = json.loads(Path(session.end_profiling()).read_text())
    calls = len(batches)
    by_op, count, by_part = kernel_times(events, skip_runs=1)
    total = sum(by_op.values()) or 1
    return {
        "bundle": {"name": b.manifest.name, "version": b.manifest.version},
        "runtime": runtime, "file": path.name, "data": str(data), "sentences": len(texts), "calls": calls,
        "batch_size": batch_size, "mean_tokens": round(float(encoded.lengths.mean()), 1),
        "int8_recipe": b.manifest.export.get("int8_recipe"),
        "ops": [{"op": op, "share": round(us / total, 4), "kernels_per_call": round(count[op] / calls, 1),
                 "ms_per_call_profiled": round(us / calls / 1000, 4)} for op, us in by_op.most_common()],
        "parts": {part: round(us / total, 4) for part, us in by_part.items()},
        "machine": machine(threads),
    }


def ops_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"`sitrep bench ops` — {report['file']} ({report['runtime']}; int8 recipe: {report['int8_recipe']}), "
        f"{report['calls']} calls of batch {report['batch_size']} ({report['sentences']} sentences from "
        f"{report['data']}, mean {report['mean_tokens']} tokens), {m.get('cpu')}, threads {m.get('threads') or 'all'}",
        "",
        "| op type | share of kernel time | kernels per call | ms per call (profiled) |",
        "|---|---:|---:|---:|",
    ]
    for row in report["ops"]:
        lines.append(f"| {row['op']} | {100 * row['share']:.1f}% | {row['kernels_per_call']:g} | "
                     f"{row['ms_per_call_profiled']:.3f} |")
    split = report["parts"].get("outlier split", 0.0)
    smooth = report["parts"].get("smoothing", 0.0)
    lines += ["", f"The outlier split's own ops (mask Mul, Gather, thin fp32 MatMul, recombining Add): "
              f"{100 * split:.1f}% of the kernel time"
              + (f"; the smoothing Muls (SmoothQuant): {100 * smooth:.1f}%" if smooth else "")
              + ". Times are under ONNX Runtime's profiler, which adds its "
              "own overhead: compare shares, and time calls with `sitrep bench request-path`."]
    return "\n".join(lines) + "\n"
