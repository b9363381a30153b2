"""One scoring job, whichever engine runs it: what it is (plan, fingerprint), where it writes (the
output folder: claimed, resumed or refused) and what it reports (the summary).

Both engines use this module; neither imports the other. The local engine commits shard by shard into
the folder (writer.py); the Ray engine writes it all at once (engine_ray.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sitrep.models.bundle import Bundle, load_bundle
from sitrep.scoring.options import ScoreError, ScoreOptions
from sitrep.scoring.reader import InputFile, check_columns, discover

FORMAT = "sitrep-score/1"
MANIFEST = "_manifest.json"
COMMITS = "_commits.jsonl"
REJECTS = "_rejects.jsonl"


@dataclass
class ScoreSummary:
    output: str
    engine: str
    rows: int  # input rows accounted for (scored or rejected), this run and earlier ones
    out_rows: int  # output rows (sentences)
    rejects: int
    shards: int
    resumed_rows: int = 0  # rows already committed before this run started
    wall_s: float = 0.0  # this run, from the first read to the last commit (model load excluded)
    tokenize_s: float = 0.0  # summed over tokenize workers (they run in parallel)
    model_s: float = 0.0
    already_done: bool = False
    cleaned: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return (self.rows - self.resumed_rows) / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_s": round(self.rows_per_s, 1)}


def model_fingerprint(bundle: Bundle) -> dict[str, str]:
    digest = hashlib.sha256(json.dumps(bundle.summary(), sort_keys=True).encode()).hexdigest()
    return {"name": bundle.name, "version": bundle.version, "manifest_sha256": digest}


def job_fingerprint(
    opts: ScoreOptions, files: list[InputFile], bundle: Bundle, engine: str
) -> dict[str, Any]:
    return {
        "engine": engine,
        "options": opts.fingerprint(),
        "model": model_fingerprint(bundle),
        "inputs": [f.fingerprint() for f in files],
    }


def check_output_apart(spec: str, files: list[InputFile], output: Path) -> None:
    """The output must not be read as input (a rerun would then see a different input)."""
    out = output.resolve()
    src = Path(spec)
    if src.is_dir() and out.is_relative_to(src.resolve()):
        raise ScoreError(
            f"the output folder {output} is inside the input folder {spec}; "
            "its shards would be read as input; write the output elsewhere"
        )
    for f in files:
        if f.path.is_relative_to(out):
            raise ScoreError(
                f"input {f.path} is inside the output folder {output}; write the output elsewhere"
            )


def plan(opts: ScoreOptions) -> tuple[list[InputFile], Bundle]:
    """Everything checked before any model is loaded or anything is written."""
    files = discover(opts.input, opts.input_format)
    check_output_apart(opts.input, files, opts.output)
    check_columns(files, opts.id_column, opts.text_column)
    return files, load_bundle(opts.bundle, verify=False)


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two job fingerprints."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "inputs" and isinstance(a, list) and isinstance(b, list):
            olds = {x["path"]: x for x in a}
            news = {x["path"]: x for x in b}
            out += [f"input {p} was removed" for p in sorted(set(olds) - set(news))]
            out += [f"input {p} is new" for p in sorted(set(news) - set(olds))]
            for p in sorted(set(olds) & set(news)):
                if olds[p] != news[p]:
                    out.append(
                        f"input {p} changed (size {olds[p]['size']} → {news[p]['size']}, "
                        f"mtime_ns {olds[p]['mtime_ns']} → {news[p]['mtime_ns']})"
                    )
        elif isinstance(a, dict) and isinstance(b, dict):
            out += [
                f"{key}.{k}: {a.get(k)!r} → {b.get(k)!r}"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)
            ]
        else:
            out.append(f"{key}: {a!r} → {b!r}")
    return out


def read_manifest(root: Path) -> dict[str, Any]:
    """OUTPUT/_manifest.json, checked to be a `sitrep score` output of this format."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ScoreError(f"{root / MANIFEST} is not valid JSON ({exc}); rerun with --overwrite") from exc
    if manifest.get("format") != FORMAT:
        raise ScoreError(
            f"{root} was written by another tool or version ({manifest.get('format')!r}); "
            "rerun with --overwrite or choose a new folder"
        )
    return manifest


def claim_output(root: Path, job: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Make sure OUTPUT can take this job. Returns its manifest if OUTPUT already holds this very job
    (to resume, or to report as done); None if OUTPUT is new or empty (or was cleared by --overwrite).
    Refuses a file, a foreign non-empty folder, and another job's output."""
    if root.exists() and not root.is_dir():
        raise ScoreError(f"{root} exists and is not a directory; --output names a folder of shards")
    if not root.is_dir():
        return None
    if (root / MANIFEST).is_file():
        if overwrite:
            shutil.rmtree(root)
            return None
        manifest = read_manifest(root)
        diff = fingerprint_diff(manifest.get("job", {}), job)
        if diff:
            raise ScoreError(
                f"{root} holds a different job (another job's output), so it cannot be resumed:\n  - "
                + "\n  - ".join(diff)
                + "\nRerun with --overwrite to start over, or choose a new --output folder."
            )
        return manifest
    if any(p.name != MANIFEST + ".tmp" for p in root.iterdir()):
        raise ScoreError(
            f"{root} exists, is not empty and is not a `sitrep score` output "
            f"(no {MANIFEST}); choose a new or empty folder"
        )
    return None
