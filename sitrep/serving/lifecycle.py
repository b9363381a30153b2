"""The model being served, and swapping it for another without dropping a request.

A reload loads and verifies the new bundle and warms it up in a worker thread while the old model keeps
serving; then one assignment swaps `ModelManager.current`. Requests hold the `LoadedModel` they were
accepted with, so whatever was queued or running before the swap finishes on the old model (and says
so in its response); the old model is freed when the last of them is answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sitrep.models.bundle import BundleError
from sitrep.models.runtime import Classifier, RuntimeUnavailable, load
from sitrep.serving.prometheus import Metrics
from sitrep.serving.settings import Settings

log = logging.getLogger("sitrep.serving")


class ReloadError(RuntimeError):
    """The new bundle could not be loaded; the old model keeps serving."""


class BundleNotAllowed(ReloadError):
    """The requested bundle is outside the models root (SITREP_MODELS_ROOT)."""


def allowed_bundle(requested: str, root: Path) -> Path:
    """`requested` (absolute, or relative to `root`) as a resolved path inside `root`, else BundleNotAllowed.

    Resolving first means neither `..` nor a symlink leads out of the root; the error is the same whether
    or not the path exists, so it tells a caller nothing about the server's files.
    """
    path = Path(requested)
    resolved = (path if path.is_absolute() else root / path).resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise BundleNotAllowed(
            "the bundle must be a directory inside the models root (SITREP_MODELS_ROOT); "
            "send its path relative to that root"
        )
    return resolved


@dataclass(frozen=True, eq=False)
class LoadedModel:
    classifier: Classifier
    name: str
    version: str
    runtime: str
    path: Path
    load_s: float

    def info(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "runtime": self.runtime}


def load_model(path: Path, settings: Settings) -> LoadedModel:
    """Load, verify and warm a bundle (blocking: call it from a worker thread)."""
    t0 = time.perf_counter()
    clf = load(path, settings.runtime, threads=settings.intra_op_threads, spin=settings.ort_spin)
    clf.warmup()
    return LoadedModel(
        clf, clf.bundle.name, clf.bundle.version, settings.runtime, Path(path), time.perf_counter() - t0
    )


class ModelManager:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._current: LoadedModel | None = None
        self._lock = asyncio.Lock()

    @property
    def current(self) -> LoadedModel:
        if self._current is None:
            raise RuntimeError("no model loaded yet")
        return self._current

    @property
    def loaded(self) -> bool:
        return self._current is not None

    async def start(self, preloaded: LoadedModel | None = None) -> LoadedModel:
        """Load the configured bundle at startup (errors propagate: the service must not start).

        `preloaded`: the model `server.serve` loaded before binding (so a broken bundle is one line)."""
        model = preloaded or await asyncio.to_thread(load_model, self.settings.bundle, self.settings)
        self._install(model)
        return model

    async def reload(self, path: Path | None = None) -> tuple[LoadedModel, LoadedModel]:
        """Load `path` (default: the configured bundle), warm it, then swap. Returns (previous, current)."""
        target = Path(path) if path is not None else self.settings.bundle
        async with self._lock:  # one reload at a time
            previous = self.current
            log.info("reloading model from %s", target)
            try:
                model = await asyncio.to_thread(load_model, target, self.settings)
            except (BundleError, RuntimeUnavailable, ValueError, OSError) as exc:
                self.metrics.reloads.labels("failed").inc()
                log.error("reload failed, still serving %s %s: %s", previous.name, previous.version, exc)
                raise ReloadError(str(exc)) from exc
            self._install(model)
            self.metrics.reloads.labels("ok").inc()
            log.info(
                "now serving %s %s (was %s %s; loaded in %.2fs)",
                model.name,
                model.version,
                previous.name,
                previous.version,
                model.load_s,
            )
            return previous, model

    def _install(self, model: LoadedModel) -> None:
        self._current = model
        self.metrics.set_model(model.name, model.version, model.runtime)
