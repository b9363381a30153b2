"""The running service: what the routes share (settings, metrics, the model manager, the batcher,
readiness) and its lifespan: load → warm → ready → (SIGHUP reloads) → drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sitrep.serving.batcher import BatchConfig, Batcher
from sitrep.serving.lifecycle import LoadedModel, ModelManager, ReloadError
from sitrep.serving.prometheus import Metrics
from sitrep.serving.settings import Settings

log = logging.getLogger("sitrep.serving")


class ServiceState:
    """What the routes share: settings, metrics, the model manager, the batcher, readiness."""

    def __init__(self, settings: Settings, preloaded: LoadedModel | None = None) -> None:
        self.settings = settings
        self.preloaded = preloaded
        self.metrics = Metrics()
        self.models = ModelManager(settings, self.metrics)
        self.batcher: Batcher | None = None
        self.ready = False
        self.draining = False
        self._background: set[asyncio.Task[Any]] = set()

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready else 0)

    def reload_in_background(self) -> None:
        """SIGHUP: reload the configured bundle; the outcome goes to the log and the reload metric."""
        task = asyncio.get_running_loop().create_task(self._reload_quietly())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(ReloadError):  # logged and counted; the old model keeps serving
            await self.models.reload()

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        model = await self.models.start(self.preloaded)
        self.preloaded = None
        log.info(
            "serving %s %s with %s (%d intra-op threads), batching %s",
            model.name,
            model.version,
            model.runtime,
            self.settings.intra_op_threads,
            "on" if self.settings.batching else "off",
        )
        self.batcher = Batcher(
            BatchConfig(
                self.settings.batching,
                self.settings.max_batch_size,
                self.settings.max_batch_tokens,
                self.settings.max_wait_ms,
                self.settings.queue_limit,
            ),
            self.metrics,
        )
        self.batcher.start()
        loop = asyncio.get_running_loop()
        hup = _add_signal_handler(loop, signal.SIGHUP, self.reload_in_background)
        self.set_ready(True)
        try:
            yield
        finally:
            self.set_ready(False)
            self.draining = True
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            await self.batcher.close(timeout=self.settings.drain_timeout_s)
            log.info("drained; bye")


def _add_signal_handler(loop: asyncio.AbstractEventLoop, sig: signal.Signals, callback: Any) -> bool:
    try:
        loop.add_signal_handler(sig, callback)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or not a Unix loop
        return False
    return True
