"""The model bundle: one directory, one manifest, one writer and one loader.

Layout::

    BUNDLE/
      manifest.json        what this module reads and writes (nothing else parses it)
      hf/                  the Hugging Face checkpoint and tokenizer (config, safetensors, tokenizer.json)
      onnx/model.onnx      fp32, written by `sitrep export`
      onnx/model.int8.onnx CPU, graph-optimized + dynamically quantized
      onnx/model.fp16.onnx CUDA execution provider
      reports/             training log, parity report

Every file's SHA-256 is in the manifest; loading verifies them and refuses a corrupted, incomplete
or mismatched bundle with a :class:`BundleError` that says which file and why.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sitrep.models.files import write_json_atomic
from sitrep.models.labels import LABELS

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
HF_DIR = "hf"
TOKENIZER_FILE = f"{HF_DIR}/tokenizer.json"
# The same vocabulary as a SentencePiece model, written by `sitrep export` (sitrep/models/encoding.py).
SPM_FILE = "onnx/tokenizer.spm.model"
ONNX_FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model.int8.onnx", "cuda": "onnx/model.fp16.onnx"}


class BundleError(RuntimeError):
    """A bundle is missing, corrupted, incomplete or does not match this code's labels."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """One hash over several files' contents, in the given order (used for the training data hash)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


@dataclass
class Calibration:
    """Per-label Platt scaling of logits: p = sigmoid(a * logit + b). Identity is a=1, b=0."""

    a: list[float] = field(default_factory=lambda: [1.0] * len(LABELS))
    b: list[float] = field(default_factory=lambda: [0.0] * len(LABELS))
    method: str = "platt"

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        if data.get("method") != "platt":
            raise BundleError(f"unknown calibration method {data.get('method')!r}")
        return cls(a=[float(x) for x in data["a"]], b=[float(x) for x in data["b"]])


@dataclass
class Manifest:
    name: str
    version: str
    base_model: str
    max_length: int
    thresholds: dict[str, float]
    calibration: Calibration
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    training: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "base_model": self.base_model,
            "labels": self.labels,
            "thresholds": self.thresholds,
            "calibration": self.calibration.to_json(),
            "max_length": self.max_length,
            "training": self.training,
            "scores": self.scores,
            "export": self.export,
            "files": self.files,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        try:
            return cls(
                format_version=int(data["format_version"]),
                name=str(data["name"]),
                version=str(data["version"]),
                created=str(data["created"]),
                base_model=str(data["base_model"]),
                labels=list(data["labels"]),
                thresholds={k: float(v) for k, v in data["thresholds"].items()},
                calibration=Calibration.from_json(data["calibration"]),
                max_length=int(data["max_length"]),
                training=dict(data.get("training", {})),
                scores=dict(data.get("scores", {})),
                export=dict(data.get("export", {})),
                files=dict(data["files"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest.json is malformed: {exc!r}") from exc


@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    # --- what the runtime, serving and eval read -------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def thresholds(self) -> list[float]:
        return [self.manifest.thresholds[label] for label in self.manifest.labels]

    @property
    def context(self) -> str:
        """"previous": the model was trained with each article sentence's previous sentence as a second segment
        (the training config's `context`); "none" (and every bundle older than the option): sentences alone."""
        return str(self.manifest.training.get("config", {}).get("context", "none"))

    @property
    def dev_files(self) -> str | list[str]:
        """The labeled dev file(s) the bundle was trained with (export's and the int8 benches' default set)."""
        return self.manifest.training.get("config", {}).get("dev_file", "data/dev.jsonl")

    @property
    def calibration(self) -> Calibration:
        return self.manifest.calibration

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    @property
    def hf_dir(self) -> Path:
        return self.path / HF_DIR

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def spm_file(self) -> Path | None:
        """The SentencePiece tokenizer export wrote (None for bundles without one: tokenizer.json is used)."""
        return self.path / SPM_FILE if self.has(SPM_FILE) else None

    @property
    def int8_needs_vnni(self) -> bool:
        """The int8 model has int8 weights, verified on a CPU with VNNI (see sitrep/models/cpu.py)."""
        return bool(self.manifest.export.get("int8_needs_vnni", False))

    def onnx_file(self, runtime: str) -> Path:
        return self.path / ONNX_FILES[runtime]

    def has(self, rel: str) -> bool:
        return rel in self.manifest.files

    def summary(self) -> dict[str, Any]:
        """The manifest as JSON (served at GET /v1/model)."""
        return self.manifest.to_json()

    # --- integrity -------------------------------------------------------------------------
    def verify(self, rel_paths: list[str] | None = None) -> None:
        """Check the SHA-256 of the given files (default: every file in the manifest)."""
        wanted = list(self.manifest.files) if rel_paths is None else rel_paths
        for rel in wanted:
            expected = self.manifest.files.get(rel)
            if expected is None:
                raise BundleError(
                    f"{self.path}: {rel} is not part of this bundle"
                    + (" (run `sitrep export` on it first)" if rel.startswith("onnx/") else "")
                )
            p = self.path / rel
            if not p.is_file():
                raise BundleError(f"{self.path}: {rel} is listed in the manifest but missing on disk")
            actual = sha256_file(p)
            if actual != expected:
                raise BundleError(
                    f"{self.path}: {rel} is corrupted or was changed after the bundle was written "
                    f"(sha256 {actual[:12]}…, manifest says {expected[:12]}…)"
                )


def load_bundle(path: str | os.PathLike[str], verify: bool = True) -> Bundle:
    """Read a bundle's manifest, check it matches this code's labels, and verify file hashes."""
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root} is not a model bundle (no {MANIFEST}); build one with `sitrep train`")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{mpath} is not valid JSON: {exc}") from exc
    manifest = Manifest.from_json(data)
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(f"bundle format {manifest.format_version}, this code reads {FORMAT_VERSION}")
    if tuple(manifest.labels) != LABELS:
        raise BundleError(f"bundle labels {manifest.labels} do not match this code's labels {list(LABELS)}")
    missing = [label for label in LABELS if label not in manifest.thresholds]
    if missing:
        raise BundleError(f"manifest has no threshold for {missing}")
    bundle = Bundle(path=root, manifest=manifest)
    if verify:
        bundle.verify()
    return bundle


def write_bundle_manifest(root: Path, manifest: Manifest) -> Bundle:
    """Hash every file under `root` (except the manifest) into the manifest and write it atomically."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp"):
            files[p.relative_to(root).as_posix()] = sha256_file(p)
    manifest.files = files
    write_json_atomic(root / MANIFEST, manifest.to_json())
    return Bundle(path=root, manifest=manifest)
