"""`sitrep bench …`: every benchmark, each comparing its variants side by side in one run. No logic here."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sitrep.console import fail
from sitrep.models.runtime import RUNTIMES
from sitrep.scoring.options import DEFAULT_CHUNK_ROWS, ScoreError


def bench_http(
    bundle: Path = typer.Argument(..., help="Model bundle directory."),
    concurrency: str = typer.Option("1,8,32", help="Comma-separated client concurrency levels."),
    sizes: str = typer.Option("1,32", help="Comma-separated sentences per request."),
    seconds: float = typer.Option(8.0, help="Measured seconds per cell (after a warm-up)."),
    runtime: str = typer.Option("onnx-int8", help="Runtime the server and the in-process baseline use."),
    threads: int | None = typer.Option(
        None, help="ONNX Runtime threads for both (default: all usable CPUs, in both)."
    ),
    max_batch_size: int = typer.Option(64, help="Server SITREP_MAX_BATCH_SIZE."),
    max_batch_tokens: int = typer.Option(512, help="Server SITREP_MAX_BATCH_TOKENS."),
    max_wait_ms: float = typer.Option(2.0, help="Server SITREP_MAX_WAIT_MS (batching on)."),
    data: list[Path] = typer.Option([Path("data/test.jsonl")], help="JSONL file(s) with a `text` field."),
    modes: str = typer.Option("on,off", help="Dynamic batching modes to compare: on, off or both."),
    json_out: Path | None = typer.Option(None, "--json", help="Write all measurements as JSON here."),
    markdown: Path | None = typer.Option(None, help="Write the result tables as Markdown here."),
) -> None:
    """Load-test the HTTP service from this process against servers on loopback, batching on vs off.

    For each mode a server subprocess is started on a free loopback port; every (request size,
    concurrency) cell then runs for SECONDS with a pool of keep-alive connections. Reported per cell:
    requests/s, sentences/s, p50/p95/p99 latency, errors, and the server's peak RSS in that cell;
    then the ratio of batching on to off, and of HTTP to the in-process runtime
    (`Classifier.classify` on the same sentences, measured first in this process).

    Examples:

      sitrep bench http artifacts/models/default

      sitrep bench http artifacts/models/default --seconds 5 --concurrency 32 --sizes 1 --json bench.json
    """
    from sitrep.bench.http import BenchConfig, render_markdown, run_bench

    def ints(text: str) -> list[int]:
        try:
            values = [int(x) for x in text.split(",") if x.strip()]
        except ValueError as exc:
            raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from exc
        if not values or min(values) < 1:
            raise typer.BadParameter(f"expected positive integers, got {text!r}")
        return values

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if not mode_list or any(m not in ("on", "off") for m in mode_list):
        raise typer.BadParameter("--modes takes 'on', 'off' or 'on,off'")
    config = BenchConfig(
        bundle=bundle,
        concurrency=ints(concurrency),
        sizes=ints(sizes),
        seconds=seconds,
        runtime=runtime,
        threads=threads,
        max_batch_size=max_batch_size,
        max_batch_tokens=max_batch_tokens,
        max_wait_ms=max_wait_ms,
        data=data,
        modes=mode_list,
    )
    try:
        report = run_bench(config)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        raise fail(f"{exc}") from exc
    text = render_markdown(report)
    typer.echo(text)
    if json_out:
        import json

        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(text + "\n", encoding="utf-8")



def bench_score(
    bundle: Path = typer.Argument(..., help="Model bundle folder."),
    runtimes: str = typer.Option("onnx-int8,cuda,torch", help="Comma-separated runtimes to compare."),
    batch_sizes: str = typer.Option("256,1024,4096", help="Comma-separated batch sizes."),
    rows: int = typer.Option(20000, help="Sentences per variant (news-length, drawn from --data)."),
    data: str = typer.Option("data/*.jsonl", help="Glob of JSONL files whose `text` fields are sampled."),
    chunk_rows: int = typer.Option(DEFAULT_CHUNK_ROWS, help="Input rows per shard, as in `sitrep score`."),
    tokenize_workers: int | None = typer.Option(None, help="Tokenizer threads in the pipeline."),
    threads: int | None = typer.Option(None, help="ONNX Runtime / torch threads."),
    device: str | None = typer.Option(None, help="torch runtime: cpu or cuda (default: cuda if any)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    repeats: int = typer.Option(1, help="Rounds over all variants (interleaved); medians are reported."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full report as JSON here."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown (for READMEs)."),
) -> None:
    """Rows/s of `sitrep score` per runtime and batch size, side by side.

    End to end (read, tokenize, model, write) and model-only rates, with
    tokenization timed apart. Runtimes that cannot run here (cuda without a
    GPU) are listed as skipped, with the reason.

    Examples:

      sitrep bench score artifacts/models/default --runtimes onnx-int8 \\
        --batch-sizes 64,256 --rows 2000

      sitrep bench score artifacts/models/default --runtimes cuda,torch \\
        --batch-sizes 256,1024,4096 --rows 200000 --json bench-score-h100.json
    """
    from rich.console import Console

    from sitrep.bench.score import render_markdown, render_table, run_bench
    from sitrep.models.bundle import BundleError

    try:
        rts = [x.strip() for x in runtimes.split(",") if x.strip()]
        unknown = [r for r in rts if r not in RUNTIMES]
        if unknown:
            raise ScoreError(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")
        sizes = [int(x) for x in batch_sizes.split(",") if x.strip()]
        report = run_bench(bundle, rts, sizes, rows, data=data, chunk_rows=chunk_rows,
                           tokenize_workers=tokenize_workers, threads=threads, device=device, seed=seed,
                           repeats=repeats, log=lambda m: typer.echo(m, err=True))  # fmt: skip
    except ValueError as exc:
        raise fail(f"--batch-sizes must be integers ({exc})") from exc
    except (ScoreError, BundleError) as exc:
        raise fail(str(exc)) from exc
    if markdown:
        typer.echo(render_markdown(report))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 132))  # piped into a file: no wrapping
        console.print(render_table(report))
    if not report["machine"]["gpu"]:
        typer.echo("no GPU on this machine: GPU runtimes were not measured")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        typer.echo(f"report written: {json_out}")



def bench_models_command(
    bundle: Path = typer.Argument(..., help="Model bundle directory (exported: onnx/*.onnx)."),
    data: Path = typer.Option(Path("data/test.jsonl"), help="Labeled JSONL to draw the sentences from."),
    sentences: int = typer.Option(
        256, min=1, help="How many news-length sentences (same list for every variant)."
    ),
    batch_sizes: str = typer.Option("1,32", help="Comma-separated batch sizes."),
    variants: str = typer.Option(
        "pipeline,torch,onnx,onnx-int8,onnx-int8-padded,cuda",
        help="Comma-separated: pipeline (transformers fp32), torch, onnx, onnx-int8, onnx-int8-padded "
        "(int8 with each batch one padded call, to see what the runtime's split saves), cuda (fp16, GPU only).",
    ),
    min_batches: int = typer.Option(
        24, min=1, help="Time at least this many request batches per variant and batch size."
    ),
    rounds: int = typer.Option(
        3, min=1, help="Interleave the variants in this many rounds (each gets one bulk pass per round)."
    ),
    threads: int | None = typer.Option(
        None, help="Threads for every variant and the GEMM (default: all CPUs)."
    ),
    gemm_size: int = typer.Option(1024, min=16, help="M = N = K of the peak GEMM measurement."),
    out: Path = typer.Option(
        Path("artifacts/reports/bench-models"), "--out", "-o", help="Directory for bench.json and bench.md."
    ),
) -> None:
    """Side by side on the same sentences: the transformers pipeline vs our runtimes, batch 1 and 32.

    Variants: `pipeline` (transformers text-classification pipeline, fp32 — what a user would pick
    instead), our runtime with `torch`, `onnx` (fp32), `onnx-int8`, and `cuda` (fp16, only with a GPU;
    otherwise the JSON says why it was skipped). Each variant runs in its own subprocess (so peak
    RSS is that variant's) and warms up; then the variants are timed interleaved, round by round in
    a rotating order, so load from other processes falls on all of them alike. Request mode: the
    sentences in consecutive batches, one call each — sentences/s and p50/p99 latency per batch
    (tokenization included); bulk mode: the whole list in one call at that batch size (our runtime
    sorts by length, the pipeline keeps input order) — sentences/s. Also: peak RSS, each one's
    ratios to the pipeline, and macro-F1 on the sentences' gold labels (Δ to onnx fp32).

    It also times a fp32 MatMul and int8 MatMulInteger (u8×s8, u8×u8) of size --gemm-size through
    ONNX Runtime and reports which fraction of that peak the fp32 / int8 models reach (model FLOPs
    per sentence from the config's shapes and the token counts), and whether onnx-int8 meets ≥ 4×
    the pipeline's bulk sentences/s at batch 32 with macro-F1 at most 0.5 point below fp32.
    Timings are wall-clock; the load average at the start and end is recorded.

    Examples:

      sitrep bench models artifacts/models/default

      sitrep bench models artifacts/models/default --sentences 512 --variants pipeline,onnx,onnx-int8
    """
    from sitrep.bench.models import BenchError, BenchSpec, run_bench

    try:
        spec = BenchSpec(
            bundle=bundle,
            data=data,
            sentences=sentences,
            batch_sizes=[int(x) for x in batch_sizes.split(",") if x.strip()],
            variants=[x.strip() for x in variants.split(",") if x.strip()],
            min_batches=min_batches,
            rounds=rounds,
            threads=threads,
            gemm_size=gemm_size,
        )
        result = run_bench(spec, out, log=typer.echo)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    except BenchError as exc:
        raise fail(str(exc)) from exc
    typer.echo(result["markdown"])
    typer.echo(f"written: {result['paths']['json']}  {result['paths']['markdown']}")



def bench_int8(
    bundle: Path = typer.Argument(..., help="An exported model bundle (needs onnx/model.onnx)."),
    data: Path | None = typer.Option(None, "--data", "-d", help="Labeled JSONL (default: the bundle's dev file)."),
    thresholds: str = typer.Option("none,4", help="FFN outlier thresholds to try; 'none' = no split."),
    weights: str = typer.Option("int8,uint8", help="Weight types: int8 (u8s8 kernels), uint8 (u8u8)."),
    word_embeddings: str = typer.Option(
        "fp32", help="Word-embedding table storage to try, comma-separated: fp32, int8-row (one scale per row), "
        "fp16, int8-tensor (ONNX Runtime's, one scale for the table)."),
    embeddings: bool = typer.Option(False, help="Shorthand: add int8-tensor to --word-embeddings."),
    ffn_fp32: bool = typer.Option(False, help="Keep every FFN MatMul fp32 (the last rung of export's uint8 ladder)."),
    fp32_weights: str = typer.Option(
        "fp32", help="How the MatMul weights left fp32 are stored in the file, comma-separated: fp32, fp16 "
        "(half the bytes), fp16+int8-residual (three quarters, near-exact); rebuilt in fp32 once when the session loads."),
    qkv: bool = typer.Option(False, help="Unfuse the attention into a QKV MatMul + MultiHeadAttention and split "
                             "the QKV MatMuls' outlier channels too (with each threshold)."),
    blockwise: str = typer.Option("", help="Also rows for MatMulNBits (8-bit weights, int8 activations per token "
                                  "and block) with these block sizes, comma-separated, e.g. 64,16."),
    smooth: str = typer.Option("", help="Also rows where the outlier channels are smoothed into the weights "
                               "(SmoothQuant) instead of split off, with these alphas between 0 and 1, comma-separated, "
                               "e.g. 0.7,0.8 (with --qkv the QKV MatMuls too); --thresholds '' leaves only these rows."),
    smooth_attention: str = typer.Option(
        "", help="The attention on the --smooth rows, comma-separated, one row each: unfused (QKV MatMul + "
        "MultiHeadAttention, the QKV MatMul smoothed too), fused (the fused Attention's input smoothed too, one "
        "QAttention op), none (only the FFN MatMuls smoothed). Default: unfused with --qkv, else none."),
    batch1: int = typer.Option(100, min=0, help="Time single-sentence calls (request mode at batch 1, where the "
                               "outlier split's small ops weigh most) on this many sentences, every row's model "
                               "taking turns on each sentence (all rows' sessions loaded at once); 0: skip."),
    batch32: int = typer.Option(0, min=0, help="Also time calls of 32 consecutive sentences (request mode at batch "
                                "32) on this many sentences, the rows taking turns on each call; 0: skip."),
    layernorm: str = typer.Option(
        "unfused", help="The residual LayerNorms, comma-separated, one pass of all rows each, in order (repeats "
        "interleave them): unfused (Add + LayerNormalization, what export writes) or fused (SkipLayerNormalization)."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the rows as JSON here."),
    markdown_path: Path | None = typer.Option(None, "--markdown", help="Write the table as Markdown here."),
) -> None:
    """Compare int8 settings side by side on dev against ONNX fp32 (agreement, ΔF1, size, speed).

    Speed is two columns: sentences/s scoring the whole set at batch 32 (session start included), and the median
    ms of a single-sentence call. Rows run one after another: compare them within one run.

    Nothing is written into the bundle: this is the table behind `sitrep export`'s int8 ladder.

    Examples:

      sitrep bench int8 artifacts/models/default

      sitrep bench int8 artifacts/models/default --thresholds none,3,4,5,6 --weights int8 --markdown int8.md

      sitrep bench int8 artifacts/models/default --thresholds none --weights uint8 --ffn-fp32 \\
          --word-embeddings fp32,int8-row,fp16 --fp32-weights fp32,fp16,fp16+int8-residual

      # export's VNNI rungs side by side: the QKV split at 4 and 3, MatMulNBits in blocks of 64 and 16
      sitrep bench int8 artifacts/models/default --thresholds 4,3 --weights int8 --qkv --blockwise 64,16

      # SmoothQuant against the split export ships (FFN and QKV MatMuls both ways), batch 1 timed on 300 sentences
      sitrep bench int8 artifacts/models/default --thresholds 4 --smooth 0.5,0.7,0.8,0.9 --weights int8 --qkv \\
          --word-embeddings int8-row --batch1 300 --batch32 640

      # the smoothed attention fused (QAttention) against unfused (QKV MatMul + Split + MultiHeadAttention)
      sitrep bench int8 artifacts/models/default --thresholds '' --smooth 0.8,0.85 --smooth-attention unfused,fused \\
          --weights int8 --word-embeddings int8-row --batch1 600 --batch32 1280

      # the fused SkipLayerNormalization against export's unfused Add + LayerNormalization, interleaved
      sitrep bench int8 artifacts/models/default --thresholds 4 --weights int8 --qkv --word-embeddings int8-row \\
          --fp32-weights fp32 --layernorm fused,unfused,fused,unfused --batch1 300
    """
    from sitrep.bench.int8 import run_study, study_markdown, write_study
    from sitrep.models.bundle import BundleError
    from sitrep.models.corpus import CorpusError

    try:
        ts = [None if t.strip().lower() == "none" else float(t) for t in thresholds.split(",") if t.strip()]
        ws = [w.strip() for w in weights.split(",") if w.strip()]
    except ValueError as exc:
        raise fail(f"--thresholds takes numbers or 'none' ({exc})") from exc
    try:
        blocks = [int(b) for b in blockwise.split(",") if b.strip()]
    except ValueError as exc:
        raise fail(f"--blockwise takes block sizes such as 64,16 ({exc})") from exc
    if any(b < 16 or b & (b - 1) for b in blocks):
        raise fail(f"--blockwise: block sizes are powers of two, 16 or more (got {blocks})")
    try:
        alphas = [float(a) for a in smooth.split(",") if a.strip()]
    except ValueError as exc:
        raise fail(f"--smooth takes alphas such as 0.7,0.8 ({exc})") from exc
    if any(not 0 < a < 1 for a in alphas):
        raise fail(f"--smooth: each alpha is between 0 and 1, exclusive (got {alphas})")
    bad = [w for w in ws if w not in ("int8", "uint8")]
    if bad or not ws or not (ts or alphas):
        raise fail(f"--weights takes int8 and/or uint8, --thresholds or --smooth at least one value (got {bad})")
    es = [e.strip() for e in word_embeddings.split(",") if e.strip()]
    es += ["int8-tensor"] if embeddings and "int8-tensor" not in es else []
    try:
        report = run_study(bundle, data, ts, ws, es, ffn_fp32, log=typer.echo,
                           fp32_weights=[w.strip() for w in fp32_weights.split(",") if w.strip()], qkv=qkv,
                           blockwise=blocks, batch1=batch1, batch32=batch32,
                           layernorms=[k.strip() for k in layernorm.split(",") if k.strip()], smooth=alphas,
                           smooth_attention=[f.strip() for f in smooth_attention.split(",") if f.strip()] or None)
    except (BundleError, CorpusError, FileNotFoundError, ValueError) as exc:
        raise fail(f"{exc}") from exc
    write_study(report, json_path, markdown_path)
    typer.echo(study_markdown(report))



def bench_int8_noise(
    bundle: Path = typer.Argument(..., help="An exported model bundle (needs onnx/model.onnx and model.int8.onnx)."),
    data: Path | None = typer.Option(None, "--data", "-d", help="Labeled JSONL (default: the bundle's dev files)."),
    rel: float = typer.Option(1e-6, help="Relative noise: each fp32 MatMul weight is multiplied by 1 + REL·N(0, 1)."),
    seeds: int = typer.Option(3, min=1, help="Noisy copies of the int8 file (seeds 0, 1, …)."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the rows as JSON here."),
    markdown_path: Path | None = typer.Option(None, "--markdown", help="Write the table as Markdown here."),
) -> None:
    """How much the int8 gate's verdict moves when the int8 file's fp32 weights get tiny noise.

    Scores noisy copies of the shipped int8 file as export's gate does (agreement with ONNX fp32 on each
    dev file) and against the shipped file; a control row adds the same noise to the fp32 file. If a
    1e-6 change flips the gate, a storage that rebuilds weights to 1e-6 (fp16+int8-residual) can too.
    Nothing is written into the bundle.

    Examples:

      sitrep bench int8-noise artifacts/models/default

      sitrep bench int8-noise artifacts/models/default --rel 1e-7 --seeds 5 --markdown noise.md
    """
    from sitrep.bench.common import write_report
    from sitrep.bench.int8_noise import noise_markdown, run_noise
    from sitrep.models.bundle import BundleError
    from sitrep.models.corpus import CorpusError

    try:
        report = run_noise(bundle, data, rel, seeds, log=typer.echo)
    except (BundleError, CorpusError, FileNotFoundError, ValueError) as exc:
        raise fail(f"{exc}") from exc
    md = noise_markdown(report)
    write_report(report, json_path, md, markdown_path)
    typer.echo(md)


def bench_shapes(
    bundle: Path = typer.Argument(..., help="An exported model bundle."),
    runtime: str = typer.Option("onnx-int8", help=f"Runtime to time: {', '.join(RUNTIMES)}."),
    batch_sizes: str = typer.Option("1,2,4,8,16,32", help="Comma-separated batch sizes."),
    lengths: str = typer.Option("16,32,64,128", help="Comma-separated padded lengths, in tokens."),
    repeats: int = typer.Option(5, min=1, help="Timed calls per shape (the median is kept)."),
    threads: int | None = typer.Option(None, help="Threads for the runtime (default: all cores)."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown_path: Path | None = typer.Option(None, "--markdown", help="Write the table as Markdown here."),
) -> None:
    """What one model call costs by batch size and length, and a call's fixed cost in tokens.

    Fits ms = overhead + per-token × B × L over the shapes: overhead / per-token is what the runtime's
    cost-based split of mixed-length batches assumes (CALL_OVERHEAD_TOKENS in sitrep/models/encoding.py).

    Examples:

      sitrep bench shapes artifacts/models/default

      sitrep bench shapes artifacts/models/default --runtime onnx --lengths 16,48,96 --json shapes.json
    """
    from sitrep.bench.common import write_report
    from sitrep.bench.shapes import run_shapes, shapes_markdown
    from sitrep.models.bundle import BundleError

    if runtime not in RUNTIMES:
        raise fail(f"--runtime must be one of {', '.join(RUNTIMES)}")
    try:
        bs = [int(x) for x in batch_sizes.split(",") if x.strip()]
        ls = [int(x) for x in lengths.split(",") if x.strip()]
        report = run_shapes(bundle, runtime, bs, ls, repeats, threads)
    except (BundleError, ValueError) as exc:
        raise fail(str(exc)) from exc
    md = shapes_markdown(report)
    write_report(report, json_path, md, markdown_path)
    typer.echo(md)


def bench_request_path(
    bundle: Path = typer.Argument(..., help="An exported model bundle."),
    runtime: str = typer.Option("onnx-int8", help=f"Runtime: {', '.join(RUNTIMES)}."),
    data: Path = typer.Option(Path("data/test.jsonl"), help="JSONL to draw the sentences from."),
    requests: int = typer.Option(300, min=1, help="Single-sentence requests to time."),
    threads: int | None = typer.Option(None, help="Threads for the runtime (default: all cores)."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown_path: Path | None = typer.Option(None, "--markdown", help="Write the table as Markdown here."),
) -> None:
    """Where a single-sentence request spends its time: validate, plan, tokenize, pad, model, calibrate,
    build, JSON — the service's own functions, in process (HTTP and queueing: `sitrep bench http`).

    Examples:

      sitrep bench request-path artifacts/models/default

      sitrep bench request-path artifacts/models/default --runtime onnx --requests 1000 --json path.json
    """
    from sitrep.bench.common import write_report
    from sitrep.bench.request_path import request_path_markdown, run_request_path
    from sitrep.models.bundle import BundleError

    if runtime not in RUNTIMES:
        raise fail(f"--runtime must be one of {', '.join(RUNTIMES)}")
    try:
        report = run_request_path(bundle, runtime, data, requests, threads)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    md = request_path_markdown(report)
    write_report(report, json_path, md, markdown_path)
    typer.echo(md)


def bench_ops(
    bundle: Path = typer.Argument(..., help="An exported model bundle."),
    runtime: str = typer.Option("onnx-int8", help="The ONNX file to profile: onnx-int8 or onnx."),
    data: Path = typer.Option(Path("data/test.jsonl"), help="JSONL to draw the sentences from."),
    sentences: int = typer.Option(200, min=1, help="Sentences to run."),
    batch_size: int = typer.Option(1, min=1, help="Sentences per call (1: the single-request case)."),
    threads: int | None = typer.Option(None, help="Threads for ONNX Runtime (default: all cores)."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown_path: Path | None = typer.Option(None, "--markdown", help="Write the table as Markdown here."),
) -> None:
    """Where the ONNX model's time goes, by operator, under ONNX Runtime's profiler; and the share of the int8
    outlier split's own small ops (what a call pays for the split beyond its FLOPs).

    Examples:

      sitrep bench ops artifacts/models/default

      sitrep bench ops artifacts/models/default --batch-size 32 --markdown ops-b32.md
    """
    from sitrep.bench.common import write_report
    from sitrep.bench.ops import ops_markdown, run_ops
    from sitrep.models.bundle import BundleError

    try:
        report = run_ops(bundle, runtime, data, sentences, batch_size, threads)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    md = ops_markdown(report)
    write_report(report, json_path, md, markdown_path)
    typer.echo(md)


def bench_image(
    dockerfile: Path = typer.Option(Path("Dockerfile.cpu"), help="The Dockerfile to measure."),
    target: str = typer.Option("with-model", help="Build stage: with-model (bundle copied in) or serve."),
    context: Path = typer.Option(Path("."), help="Build context (the repository root)."),
    method: str = typer.Option("auto", help="auto (Docker where an engine runs, else replay), docker or replay."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown_path: Path | None = typer.Option(None, "--markdown", help="Write the table as Markdown here."),
) -> None:
    """How large the CPU container image is, layer by layer, and which installed packages weigh most.

    With a Docker engine the target is built and Docker's own sizes are read. Without one, the target's
    COPY lines and the RUN lines that call pip are replayed (into a scratch root and a fresh virtualenv,
    as tests/test_serving_docker.py does) and the bytes each adds are counted; the base image is then
    reported as not measured. The with-model target copies artifacts/models/default: `make model` first.

    Examples:

      sitrep bench image

      sitrep bench image --target serve --markdown image.md --json image.json
    """
    from sitrep.bench.common import write_report
    from sitrep.bench.image import ImageError, image_markdown, run_image

    if method not in ("auto", "docker", "replay"):
        raise fail("--method must be auto, docker or replay")
    try:
        report = run_image(dockerfile, target, context, method, log=lambda m: typer.echo(m, err=True))
    except ImageError as exc:
        raise fail(str(exc)) from exc
    md = image_markdown(report)
    write_report(report, json_path, md, markdown_path)
    typer.echo(md)


def bench_train_step(
    config: Path | None = typer.Option(
        Path("sitrep/training/configs/default.toml"), "--config", "-c", help="Training config (recipe) to time."),
    precisions: str = typer.Option("none,bf16", help="Comma-separated: none (fp32) and/or bf16 (autocast)."),
    adamw: str = typer.Option("default", help="Comma-separated AdamW implementations: default (what `sitrep train` "
                              "runs) and/or fused (PyTorch's fused CPU kernel)."),
    steps: int = typer.Option(20, help="Timed steps per row in each round (after a 3-step warm-up)."),
    rounds: int = typer.Option(2, help="Alternating rounds over the rows (the machine drifts)."),
    sentences: int = typer.Option(512, help="Training sentences to draw the batches from."),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: the config's, else all)."),
    dropouts: str = typer.Option("config", help="Comma-separated dropout probabilities while training: config (the "
                                 "recipe's, what `sitrep train` runs) and/or numbers (`sitrep train --dropout`), e.g. "
                                 "config,0."),
    profile: int = typer.Option(0, help="After the timing, profile this many steps of the first row and list the "
                                "operators that take the most time (0: off)."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown_path: Path | None = typer.Option(None, "--markdown", help="Write the table as Markdown here."),
) -> None:
    """Time the recipe's training step in fp32 and under bf16 autocast, side by side on the same batches.

    The step is `sitrep train`'s: the config's encoder, frozen (and cached) layers, length-bucketed batches of its
    training sentences, loss, backward and AdamW. On a CPU with native bf16 (AVX512-BF16, AMX) `sitrep train`
    picks bf16 by itself (`--mixed-precision auto`); this shows what that buys, and what it would cost elsewhere.

    Examples:

      sitrep bench train-step

      sitrep bench train-step -c sitrep/training/configs/articles-mean.toml --steps 10 --markdown step.md

      sitrep bench train-step --precisions bf16 --adamw default,fused   # what the fused optimizer step would buy

      sitrep bench train-step --precisions bf16 --profile 20   # and which operators the bf16 step spends it on

      sitrep bench train-step --precisions bf16 --dropouts config,0   # what training without dropout would save
    """
    from sitrep.bench.common import write_report
    from sitrep.bench.train_step import run_train_step, train_step_markdown
    from sitrep.training.train import TrainingError

    def probability(value: str) -> float | None:
        if value == "config":
            return None
        try:
            return float(value)
        except ValueError:
            raise fail(f"--dropouts: {value!r} is neither 'config' nor a probability") from None

    try:
        report = run_train_step(config, [p.strip() for p in precisions.split(",") if p.strip()], steps, rounds,
                                sentences, threads, adamw=[a.strip() for a in adamw.split(",") if a.strip()],
                                profile=profile, dropouts=[probability(d.strip()) for d in dropouts.split(",")
                                                           if d.strip()])
    except (TrainingError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    md = train_step_markdown(report)
    write_report(report, json_path, md, markdown_path)
    typer.echo(md)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    bench.command("http")(bench_http)
    bench.command("score")(bench_score)
    bench.command("models")(bench_models_command)
    bench.command("int8")(bench_int8)
    bench.command("int8-noise")(bench_int8_noise)
    bench.command("shapes")(bench_shapes)
    bench.command("request-path")(bench_request_path)
    bench.command("ops")(bench_ops)
    bench.command("image")(bench_image)
    bench.command("train-step")(bench_train_step)
