"""`sitrep train`, `sitrep export`, `sitrep data …`."""

from __future__ import annotations

from pathlib import Path

import typer

from sitrep.console import fail


def train(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config (sitrep/training/configs/default.toml)."),
    out: Path = typer.Option(Path("artifacts/models/default"), "--out", "-o", help="Bundle directory to write."),
    arch: str = typer.Option("transformer", help="'transformer' (fine-tune) or 'tfidf' (char n-gram baseline)."),
    base_model: str | None = typer.Option(None, help="Bundled alias, local folder or hub name (e.g. xlm-roberta-base)."),
    train_langs: str | None = typer.Option(None, help="Comma-separated languages to train on, e.g. 'en'."),
    train_file: str | None = typer.Option(None, help="Training JSONL; comma-separate several (default data/train.jsonl)."),
    dev_file: str | None = typer.Option(None, help="Dev JSONL for early stopping (comma-separate several)."),
    calibration_file: str | None = typer.Option(
        None, help="JSONL for calibration and thresholds (default: the dev files), e.g. data/articles/dev.jsonl."
    ),
    pooling: str | None = typer.Option(None, help="'cls' (the library's head) or 'mean' (mean over tokens)."),
    threshold_rule: str | None = typer.Option(
        None, help="'f1' (each label's F1 maximum on the calibration file) or 'calibrated' (0.5 on the calibrated "
        "probability); `sitrep thresholds BUNDLE` compares them on held-out articles."),
    name: str | None = typer.Option(None, help="Model name recorded in the manifest."),
    version: str | None = typer.Option(None, help="Model version (default: a UTC timestamp)."),
    seed: int | None = typer.Option(None),
    max_length: int | None = typer.Option(None, help="Max tokens per sentence."),
    epochs: int | None = typer.Option(None),
    max_steps: int | None = typer.Option(None, help="Stop after this many optimizer steps."),
    lr: float | None = typer.Option(None, help="Encoder learning rate."),
    warmup_ratio: float | None = typer.Option(None),
    batch_size: int | None = typer.Option(None),
    grad_accum: int | None = typer.Option(None, help="Gradient accumulation steps."),
    patience: int | None = typer.Option(None, help="Evaluations without dev gain before early stopping."),
    contrastive_steps: int | None = typer.Option(
        None, help="Steps of a contrastive first stage on sentence pairs before the head (0: none)."
    ),
    freeze_layers: int | None = typer.Option(
        None, help="Freeze the embedding block and the encoder's first N layers (faster steps; 0: train all)."
    ),
    dropout: float | None = typer.Option(
        None, help="Dropout probability of every dropout in the model while it trains (default: the base encoder's "
        "own, 0.1; 0: none, and about a fifth less time a step on a CPU: `sitrep bench train-step --dropouts`)."),
    context: str | None = typer.Option(
        None, help="'previous': give each article sentence its article's previous sentence as a second segment "
        "(train and run with document context); 'none': every sentence alone (the default)."),
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    device: str | None = typer.Option(None, help="cpu / cuda (default: cuda if available)."),
    mixed_precision: str | None = typer.Option(
        None, help="Autocast of the training steps: 'auto' (bf16 on CUDA and on a CPU with native bf16, e.g. "
        "AVX512-BF16: about 2x faster steps there), 'bf16', 'fp16' (CUDA only) or 'none' (fp32)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from OUT/checkpoint."),
    force: bool = typer.Option(False, help="Overwrite an existing bundle at OUT."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Fine-tune a multilingual encoder (multi-label: sigmoid + BCE) and write a model bundle.

    Examples:

      sitrep train -c sitrep/training/configs/default.toml -o artifacts/models/default

      sitrep train --train-langs en -o artifacts/models/en-only      # zero-shot transfer

      sitrep train --arch tfidf -o artifacts/models/tfidf            # the baseline to beat

      sitrep train --arch tfidf -c sitrep/training/configs/default.toml -o artifacts/models/tfidf-default
                                                       # the baseline on the same data as a recipe
    """
    from sitrep.training.config import TrainConfig

    def files(value: str | None) -> list[str] | None:
        return [x.strip() for x in value.split(",") if x.strip()] if value else None

    langs = files(train_langs)
    overrides = dict(
        base_model=base_model, train_langs=langs, train_file=files(train_file), dev_file=files(dev_file),
        calibration_file=files(calibration_file), pooling=pooling, threshold_rule=threshold_rule, name=name,
        version=version, seed=seed, max_length=max_length, epochs=epochs, max_steps=max_steps, lr=lr,
        warmup_ratio=warmup_ratio, batch_size=batch_size, grad_accum=grad_accum, patience=patience,
        contrastive_steps=contrastive_steps, freeze_layers=freeze_layers, context=context, dropout=dropout,
        threads=threads, device=device, mixed_precision=mixed_precision,
    )
    if arch not in ("transformer", "tfidf"):
        raise fail("--arch must be 'transformer' or 'tfidf'")
    try:
        cfg = TrainConfig.load(config, overrides)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(f"{exc}") from exc
    if arch == "tfidf":
        from sitrep.training.tfidf import train_tfidf

        model = train_tfidf(out=out, train_file=cfg.train_files, dev_file=cfg.calibration_files,
                            eval_files=cfg.eval_files, train_langs=cfg.train_langs, seed=cfg.seed)
        _print_scores(model.meta["scores"])
        typer.echo(f"baseline written: {out}")
        return
    from sitrep.training.train import TrainingError
    from sitrep.training.train import train as run_train

    try:
        path = run_train(cfg, out, resume=resume, force=force, progress=not quiet)
    except (TrainingError, ValueError, FileNotFoundError) as exc:
        raise fail(f"{exc}") from exc
    from sitrep.models.bundle import load_bundle

    _print_scores(load_bundle(path, verify=False).manifest.scores)
    typer.echo(f"bundle written: {path}")


def soup(
    bundles: list[Path] = typer.Argument(..., help="Two or more bundles fine-tuned from the same base model."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle directory to write."),
    method: str = typer.Option("greedy", help="'greedy' (add a bundle only if dev macro-F1 does not drop) or "
                               "'uniform' (average them all)."),
    name: str | None = typer.Option(None, help="Model name (default: the best ingredient's name + '-soup')."),
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    force: bool = typer.Option(False, help="Overwrite an existing bundle at OUT."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Average the weights of several fine-tuned bundles (e.g. seeds of one recipe) into one model.

    The soup starts from the ingredient with the best dev macro-F1 and is calibrated and scored with its
    training config (calibration and eval files), like a trained bundle; its manifest lists the
    ingredients and each dev trial. Then `sitrep export OUT` as usual.

    Example:

      sitrep soup artifacts/recipes/s13 artifacts/recipes/s7 artifacts/recipes/s21 -o artifacts/recipes/soup
    """
    from sitrep.models.bundle import BundleError, load_bundle
    from sitrep.training.soup import soup as run_soup
    from sitrep.training.train import TrainingError

    try:
        path = run_soup(bundles, out, method=method, name=name, force=force, threads=threads,
                        progress=not quiet, log=typer.echo)
    except (TrainingError, BundleError, ValueError, FileNotFoundError) as exc:
        raise fail(f"{exc}") from exc
    _print_scores(load_bundle(path, verify=False).manifest.scores)
    typer.echo(f"bundle written: {path}")


def _print_scores(scores: dict) -> None:
    for split, s in scores.items():
        typer.echo(f"{split:>9}: macro-F1 {s['macro_f1']:.4f}  per label {s['per_label_f1']}")
        typer.echo(f"{'':>9}  per language {s['per_language_macro_f1']}")


def export(
    bundle: Path = typer.Argument(..., help="Bundle directory from `sitrep train`."),
    data: Path | None = typer.Option(None, help="Labeled JSONL for parity (default: the bundle's dev file)."),
    portable_int8: bool = typer.Option(
        False, help="int8 with uint8 weights only: safe on CPUs without VNNI, slower than int8 weights on VNNI."
    ),
    word_embeddings: str = typer.Option(
        "int8-row,fp16", help="Compact word-embedding storages to try, in order, on the int8 recipe that passes "
        "(int8-row: one scale per row; fp16); each must pass the same gate. 'fp32' keeps the table as it is."),
    fp32_weights: str = typer.Option(
        "fp16+int8-residual", help="Storages to try, in order, for the MatMul weights the int8 recipe keeps fp32 "
        "(fp16: 2 bytes a weight; fp16+int8-residual: 3 bytes, near-exact); they still run in fp32; each must pass "
        "the same gate. 'fp32' keeps them as they are."),
    sentencepiece: bool = typer.Option(
        True, help="Write the tokenizer as a SentencePiece model for the runtime (a fraction of the memory "
        "tokenizer.json's reader takes), kept if it gives tokenizer.json's ids on the parity sentences."),
    size_budget_mib: float = typer.Option(
        150.0, "--size-budget-mib", min=0, help="When the passing uint8 recipe's int8 file ends above this, also "
        "try the rung without int8 MatMuls (fp32 compute, compact storage) and keep it if it passes with a "
        "smaller file. 'inf': no budget."),
) -> None:
    """Export ONNX fp32, int8 (CPU) and fp16 (CUDA) into the bundle, with parity gates against torch.

    Fails (exit 1) when ONNX fp32 differs from torch by more than 1e-3 in probability, or when no
    int8 recipe keeps label agreement >= 99% and macro-F1 within 0.5 point. Report: BUNDLE/reports/parity.json.
    The int8 model's word-embedding table is stored per-row int8 or fp16 where that passes the same gate,
    and the MatMul weights it keeps fp32 are stored in 3 bytes instead of 4 (fp16 + an int8 residual).
    The tokenizer is also written as a SentencePiece model (less memory in every serving process) where
    its ids match tokenizer.json's.
    """
    from sitrep.models.bundle import BundleError
    from sitrep.training.export import ExportError, Gates
    from sitrep.training.export import export as run_export

    modes = tuple(m.strip() for m in word_embeddings.split(",") if m.strip() and m.strip() != "fp32")
    bad = [m for m in modes if m not in ("int8-row", "fp16")]
    if bad:
        raise fail(f"--word-embeddings takes int8-row, fp16 or fp32 (got {bad})")
    stores = tuple(m.strip() for m in fp32_weights.split(",") if m.strip() and m.strip() != "fp32")
    from sitrep.training.fp16_weights import MODES

    bad = [m for m in stores if m not in MODES]
    if bad:
        raise fail(f"--fp32-weights takes fp16, fp16+int8-residual or fp32 (got {bad})")
    try:
        report = run_export(bundle, data=data, gates=Gates(int8_size_budget_mib=size_budget_mib),
                            portable=portable_int8, word_embeddings=modes, fp32_weights=stores,
                            sentencepiece=sentencepiece)
    except BundleError as exc:
        raise fail(f"{exc}") from exc
    except ExportError as exc:
        typer.secho(f"export failed a parity gate: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    for rt, p in report["runtimes"].items():
        if p["label_agreement"] is None:
            typer.echo(f"{rt:>9}: {p['note']}")
            continue
        typer.echo(f"{rt:>9}: max|Δp| {p['max_abs_prob_diff']:.2e}  agreement {p['label_agreement']:.4f}  "
                   f"macro-F1 {p['macro_f1']:.4f} ({p['macro_f1_delta']:+.4f})  {p['note']}")
    typer.echo(f"sizes (MB): {report['sizes_mb']}")


def thresholds(
    bundle: Path = typer.Argument(..., help="A trained bundle."),
    data: Path = typer.Option(Path("data/articles/dev.jsonl"), "--data", "-d",
                              help="Labeled JSONL with `article_id` (a dev split: never a test split)."),
    runtime: str = typer.Option("onnx-int8", help="Runtime that computes the logits (onnx-int8, onnx, torch)."),
    splits: int = typer.Option(200, min=1, help="Random article splits."),
    holdout: float = typer.Option(0.5, min=0.01, max=0.99, help="Share of the articles held out in each split."),
    seed: int = typer.Option(0, help="Seed of the splits."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write OUT.json, OUT.md and OUT.png (the splits plotted)."),
) -> None:
    """Compare the threshold rules on held-out articles: fit on some articles, score the others.

    Rules (a training config's `threshold_rule`): 'f1', each label's F1-maximising threshold; 'calibrated',
    0.5 on the Platt-calibrated probability. In each of SPLITS random splits of the file's articles,
    calibration and thresholds are fitted on the articles kept and scored on those held out; the table
    gives each rule's mean held-out macro-F1, per-label precision and recall, and in how many splits it beat
    the first rule; a second table gives each language's held-out macro-F1 (over the splits that held out
    some of its articles), to compare two bundles for one language. Use a dev split: a choice made on a test
    split is no longer tested.

    Example:

      sitrep thresholds artifacts/models/default -d data/articles/dev.jsonl -o artifacts/reports/thresholds
    """
    from sitrep.models.bundle import BundleError
    from sitrep.models.corpus import CorpusError
    from sitrep.models.runtime import RuntimeUnavailable
    from sitrep.training.threshold_rules import compare_rules, render_markdown, write

    if not data.is_file():
        raise fail(f"{data}: no such file")
    typer.echo(f"logits of {data} with {bundle} ({runtime}), then {splits} splits …", err=True)
    try:
        result = compare_rules(bundle, data, runtime, splits, holdout, seed)
    except (BundleError, CorpusError, RuntimeUnavailable, ValueError) as exc:
        raise fail(f"{exc}") from exc
    typer.echo(render_markdown(result), nl=False)
    if out is not None:
        typer.echo("written: " + "  ".join(map(str, write(result, out))))


data_app = typer.Typer(help="The labeled corpus in data/: validate it, import whole articles.", no_args_is_help=True)


@data_app.command("validate")
def data_validate(
    data_dir: Path = typer.Argument(
        Path("data"), help="Folder with train/dev/test/zeroshot/regional.jsonl, articles/ and topics.json."
    ),
    markdown: bool = typer.Option(False, help="Print the counts table as Markdown (for data/README.md)."),
    show_warnings: bool = typer.Option(False, "--warnings", help="List every warning, not just their count."),
) -> None:
    """Check schema, labels, scripts, duplicates, topic leakage and balance; print the counts table.

    Exits 1 when any error is found (CI runs it on data/).
    """
    from rich.console import Console
    from rich.table import Table

    from sitrep.training.validate_data import share_rows, table_markdown, table_rows, validate

    report = validate(data_dir)
    console = Console()
    if markdown:
        console.print(table_markdown(report), markup=False, soft_wrap=True)
    else:
        for title, (head, rows) in ((f"{data_dir}: sentences per split", table_rows(report)),
                                    (f"{data_dir}: label shares", share_rows(report))):
            table = Table(title=title)
            for col in head:
                table.add_column(col.replace("official_confirmation", "official_conf.").replace("articles/", "art/"),
                                 justify="right")
            for row in rows:
                table.add_row(*row)
            console.print(table)
    for w in report.warnings if show_warnings else []:
        console.print(f"[yellow]warning[/]: {w}", soft_wrap=True)
    for e in report.errors:
        console.print(f"[red]error[/]: {e}", soft_wrap=True, markup=True)
    console.print(f"{len(report.errors)} errors, {len(report.warnings)} warnings")
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("import-articles")
def data_import_articles(
    sources: list[Path] = typer.Argument(..., help="Writers' article files (JSONL, one article a line)."),
    data_dir: Path = typer.Option(Path("data"), help="The corpus folder (topics.json, articles/)."),
    add: bool = typer.Option(False, "--add", help="Add the files' articles to what data/articles/ holds "
                             "(an article id already there is an error) instead of replacing it."),
) -> None:
    """Build data/articles/ (texts.jsonl + one sentence a line per split, with offsets) from writers' files.

    A writer's line: {"article_id", "lang", "topic", "paragraphs": [[{"text", "labels"}, ...], ...]}; the
    split comes from the topic in topics.json. Replaces what data/articles/ holds, or with --add joins it
    (a new batch); run `sitrep data validate` afterwards. Format: sitrep/training/articles.py.

    Examples:

      sitrep data import-articles writers/*/articles.jsonl

      sitrep data import-articles --add batch7/*/articles.jsonl
    """
    import json

    from sitrep.models.files import JsonlError
    from sitrep.training.articles import ArticleError, import_articles

    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise fail(f"no such file: {', '.join(missing)}")
    try:
        topics = json.loads((data_dir / "topics.json").read_text(encoding="utf-8"))["topics"]
        counts = import_articles(sources, data_dir, topics, add=add)
    except (OSError, KeyError, json.JSONDecodeError, ArticleError, JsonlError, ValueError) as exc:
        raise fail(exc) from exc
    typer.echo(f"{data_dir / 'articles'}: " + ", ".join(f"{k} {v:,} sentences" for k, v in counts.items()))


def crosslingual_command(
    out: Path = typer.Option(
        Path("artifacts/crosslingual"),
        "--out",
        "-o",
        help="Directory for the two bundles and crosslingual.json / .md.",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Training TOML (default: sitrep/training/configs/default.toml)."
    ),
    test: Path = typer.Option(Path("data/test.jsonl"), help="In-language test set (the training languages)."),
    zeroshot: Path = typer.Option(Path("data/zeroshot.jsonl"), help="Languages never trained on."),
    source_lang: str = typer.Option("en", help="The one language of the source-only model."),
    runtime: str = typer.Option(
        "torch", help="Runtime to score with; an ONNX runtime exports each bundle first."
    ),
    epochs: int | None = typer.Option(None, help="Override the config's epochs."),
    max_steps: int | None = typer.Option(
        None, help="Stop each training run after this many optimizer steps."
    ),
    base_model: str | None = typer.Option(None, help="Override the config's base model."),
    threads: int | None = typer.Option(None, help="torch / ONNX Runtime threads."),
    force: bool = typer.Option(
        False, help="Retrain bundles that already exist under OUT (default: reuse them)."
    ),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """The cross-lingual protocol: train on English only and on all training languages, compare per language.

    Trains OUT/en-only (train and dev filtered to --source-lang) and OUT/all (every language in the
    training file) with the same config, scores both on --test and --zeroshot through the runtime,
    and writes OUT/crosslingual.json and OUT/crosslingual.md: macro-F1 per language for each
    model, the transfer gap (en-only minus all, per language; negative = what target-language
    training data buys) and each model's drop from its English score. Existing bundles are
    reused, so an interrupted run continues; --force retrains. On 2 CPU cores with the default
    config each training run takes about 15 minutes.

    Examples:

      sitrep eval-crosslingual --out artifacts/crosslingual

      sitrep eval-crosslingual -c sitrep/training/configs/default.toml --epochs 2 --out /tmp/xl

      # the default model was trained on all languages with the default config: reuse it as `all`
      cp -al artifacts/models/default artifacts/crosslingual/all && sitrep eval-crosslingual
    """
    from sitrep.training.crosslingual import CrosslingualError, run_crosslingual

    try:
        result = run_crosslingual(
            out,
            config=config,
            eval_files={"test": test, "zeroshot": zeroshot},
            source_lang=source_lang,
            runtime=runtime,
            overrides={
                "epochs": epochs,
                "max_steps": max_steps,
                "base_model": base_model,
                "threads": threads,
            },
            force=force,
            progress=not quiet,
            log=typer.echo,
        )
    except CrosslingualError as exc:
        raise fail(str(exc)) from exc
    typer.echo(result["markdown"])
    typer.echo(f"written: {result['paths']['json']}  {result['paths']['markdown']}")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("train")(train)
    app.command("export")(export)
    app.command("soup")(soup)
    app.command("thresholds")(thresholds)
    app.command("eval-crosslingual")(crosslingual_command)
    app.add_typer(data_app, name="data")
