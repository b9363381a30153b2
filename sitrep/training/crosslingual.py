"""The cross-lingual protocol: train on the source language only and on all languages, compare per language.

Two bundles are trained with the same config through ``training.train.train``: ``en-only``
(``train_langs=[source]``, so train and dev are both source-only) and ``all`` (every language of
the training file). Both are scored through the runtime on the in-language test set and on the
zero-shot set; the report gives each language's macro-F1 for both, the transfer gap
(en-only minus all: negative = what target-language training data buys) and each model's drop
from its source-language score.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sitrep.eval.predictors import BundlePredictor, PredictorError
from sitrep.eval.report import EvalError, load_examples, score
from sitrep.models.bundle import MANIFEST, ONNX_FILES, BundleError, load_bundle
from sitrep.models.corpus import read_many
from sitrep.models.files import write_json_atomic
from sitrep.training.config import TrainConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.toml"
SCHEMA_VERSION = 1


class CrosslingualError(RuntimeError):
    """Bad config or data, a reused bundle trained on other languages, or a runtime that cannot run."""


def _config(config: str | Path | TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})
    path = Path(config) if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        return TrainConfig.load(path, overrides)
    except (OSError, ValueError, TypeError) as exc:
        raise CrosslingualError(f"config {path}: {exc}") from exc


def _train_or_reuse(
    cfg: TrainConfig,
    path: Path,
    expect_langs: list[str],
    force: bool,
    progress: bool,
    log: Callable[[str], Any],
) -> dict[str, Any]:
    from sitrep.training.train import TrainingError, train

    if (path / MANIFEST).is_file() and not force:
        try:
            trained = load_bundle(path, verify=False).manifest.training
        except BundleError as exc:
            raise CrosslingualError(f"{path}: {exc} (pass --force to retrain)") from exc
        if sorted(trained.get("train_langs", [])) != sorted(expect_langs):
            raise CrosslingualError(
                f"{path} was trained on {trained.get('train_langs')}, not {expect_langs}; "
                "pass --force to retrain"
            )
        log(f"reusing {path} (trained on {', '.join(expect_langs)})")
        return trained
    log(f"training {path} on {', '.join(expect_langs)}")
    try:
        train(cfg, path, force=force, progress=progress)
    except (TrainingError, ValueError, FileNotFoundError) as exc:
        raise CrosslingualError(f"training {path}: {exc}") from exc
    return load_bundle(path, verify=False).manifest.training


def _ensure_runtime(path: Path, runtime: str, log: Callable[[str], Any]) -> None:
    """ONNX runtimes need an export; export failures of other runtimes' gates do not matter here."""
    if runtime == "torch" or load_bundle(path, verify=False).has(ONNX_FILES[runtime]):
        return
    from sitrep.training.export import ExportError, export

    log(f"exporting {path} for runtime {runtime}")
    try:
        export(path, log=log)
    except ExportError as exc:
        if not load_bundle(path, verify=False).has(ONNX_FILES[runtime]):
            raise CrosslingualError(f"{path}: export did not produce {runtime}: {exc}") from exc
        log(f"note: {exc}")


def run_crosslingual(
    out: str | Path,
    config: str | Path | TrainConfig | None = None,
    eval_files: dict[str, str | Path] | None = None,
    source_lang: str = "en",
    runtime: str = "torch",
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Train (or reuse) both bundles under `out`, score them, write crosslingual.json and .md."""
    out = Path(out)
    eval_files = eval_files or {"test": "data/test.jsonl", "zeroshot": "data/zeroshot.jsonl"}
    overrides = dict(overrides or {})
    threads = overrides.get("threads")
    base_cfg = _config(config, overrides)
    try:
        all_langs = sorted({e.lang for e in read_many(base_cfg.train_files)})
        splits = {name: load_examples(path) for name, path in eval_files.items()}
    except (OSError, ValueError, EvalError) as exc:
        raise CrosslingualError(str(exc)) from exc
    if source_lang not in all_langs:
        raise CrosslingualError(
            f"{base_cfg.train_files} have no '{source_lang}' sentences (languages: {all_langs})"
        )
    plans = {"en-only": [source_lang], "all": all_langs}
    models: dict[str, Any] = {}
    scores: dict[str, dict[str, Any]] = {}
    for key, langs in plans.items():
        path = out / key
        cfg = replace(base_cfg, train_langs=None if key == "all" else langs, name=f"{base_cfg.name}-{key}")
        trained = _train_or_reuse(cfg, path, langs, force, progress, log)
        _ensure_runtime(path, runtime, log)
        try:
            predictor = BundlePredictor(path, runtime, threads=threads, progress=progress)
        except PredictorError as exc:
            raise CrosslingualError(str(exc)) from exc
        models[key] = {
            "path": str(path),
            "name": predictor.name,
            "version": predictor.version,
            "train_langs": trained.get("train_langs"),
            "steps": trained.get("steps"),
            "train_time_s": trained.get("time_s"),
        }
        scores[key] = {}
        for split, examples in splits.items():
            preds = predictor.predict([e.text for e in examples], [e.context for e in examples])
            scores[key][split] = score(examples, preds, predictor.thresholds, n_errors=None)
    result = summarize(scores, models, splits, source_lang, all_langs)
    result.update(
        {
            "runtime": runtime,
            "config": base_cfg.to_json(),
            "data": {k: {"path": str(v), "n": len(splits[k])} for k, v in eval_files.items()},
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    md = render_markdown(result)
    paths = {"json": out / "crosslingual.json", "markdown": out / "crosslingual.md"}
    write_json_atomic(paths["json"], result)
    paths["markdown"].write_text(md, encoding="utf-8")
    return {**result, "markdown": md, "paths": paths}


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def summarize(
    scores: dict[str, dict[str, Any]],
    models: dict[str, Any],
    splits: dict[str, Any],
    source_lang: str,
    all_langs: list[str],
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for split in splits:
        for lang, s in scores["en-only"][split]["per_language"].items():
            src = scores["all"][split]["per_language"].get(lang, {})
            a, b = s["macro_f1"], src.get("macro_f1")
            rows.append(
                {
                    "split": split,
                    "lang": lang,
                    "n": s["n"],
                    "role_en_only": "source" if lang == source_lang else "zero-shot",
                    "role_all": "trained" if lang in all_langs else "zero-shot",
                    "en-only": a,
                    "all": b,
                    "transfer_gap": _gap(a, b),
                    "labels_excluded": s["labels_excluded"],
                }
            )
    source = {
        k: next((r[k] for r in rows if r["lang"] == source_lang and r[k] is not None), None)
        for k in ("en-only", "all")
    }
    for r in rows:
        r["drop_from_source"] = {k: _gap(r[k], source[k]) for k in ("en-only", "all")}
    overall = {
        split: {
            "en-only": scores["en-only"][split]["macro_f1"],
            "all": scores["all"][split]["macro_f1"],
            "transfer_gap": _gap(scores["en-only"][split]["macro_f1"], scores["all"][split]["macro_f1"]),
        }
        for split in splits
    }
    targets = [r for r in rows if r["lang"] != source_lang]
    summary = {
        "mean_transfer_gap_trained_targets": _mean(
            [r["transfer_gap"] for r in targets if r["role_all"] == "trained"]
        ),
        "mean_transfer_gap_zero_shot": _mean(
            [r["transfer_gap"] for r in targets if r["role_all"] == "zero-shot"]
        ),
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source_lang": source_lang,
        "train_langs_all": all_langs,
        "models": models,
        "overall": overall,
        "per_language": rows,
        "summary": summary,
    }


def _f(v: float | None, signed: bool = False) -> str:
    return "—" if v is None else (f"{v:+.4f}" if signed else f"{v:.4f}")


def render_markdown(result: dict[str, Any]) -> str:
    src = result["source_lang"]
    m = result["models"]
    lines = [
        "# Cross-lingual transfer",
        "",
        f"- `en-only`: {m['en-only']['name']} {m['en-only']['version']}, trained on {src} only "
        f"({m['en-only']['steps']} steps, {m['en-only']['train_time_s']} s)",
        f"- `all`: {m['all']['name']} {m['all']['version']}, "
        f"trained on {', '.join(result['train_langs_all'])} "
        f"({m['all']['steps']} steps, {m['all']['train_time_s']} s)",
        f"- runtime `{result['runtime']}`; transfer gap = en-only minus all (negative: what target-language "
        "training data buys); drop = the language's macro-F1 minus the model's own "
        f"`{src}` macro-F1",
        "",
        f"| split | lang | n | role for en-only | en-only macro-F1 | all macro-F1 | transfer gap | "
        f"en-only drop vs {src} | all drop vs {src} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["per_language"]:
        lines.append(
            f"| {r['split']} | {r['lang']} | {r['n']} | {r['role_en_only']} | {_f(r['en-only'])} | "
            f"{_f(r['all'])} | {_f(r['transfer_gap'], True)} | "
            f"{_f(r['drop_from_source']['en-only'], True)} | {_f(r['drop_from_source']['all'], True)} |"
        )
    for split, o in result["overall"].items():
        lines.append(
            f"| {split} | all | {result['data'][split]['n']} | | "
            f"{_f(o['en-only'])} | {_f(o['all'])} | {_f(o['transfer_gap'], True)} | | |"
        )
    s = result["summary"]
    lines += [
        "",
        f"Mean transfer gap over the non-{src} training languages: "
        f"{_f(s['mean_transfer_gap_trained_targets'], True)}; over the zero-shot languages: "
        f"{_f(s['mean_transfer_gap_zero_shot'], True)}.",
    ]
    excluded = [
        f"{r['split']}/{r['lang']}: {', '.join(r['labels_excluded'])}"
        for r in result["per_language"]
        if r["labels_excluded"]
    ]
    if excluded:
        lines += [
            "",
            "Labels with no positive example, left out of that language's macro-F1: "
            + "; ".join(excluded)
            + ".",
        ]
    return "\n".join(lines) + "\n"
