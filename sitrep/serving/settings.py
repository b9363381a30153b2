"""Service configuration: every knob is a `SITREP_*` environment variable (or a `sitrep serve` option).

    SITREP_BUNDLE=artifacts/models/default SITREP_MAX_WAIT_MS=3 SITREP_API_KEYS=k1,k2 python -m serving

The table in sitrep/serving/README.md lists them all; `Settings.model_fields` is the source of truth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sitrep.models.runtime import DEFAULT_RUNTIME, RUNTIMES

TextPolicy = Literal["truncate", "refuse"]


class Settings(BaseSettings):
    """Read from `SITREP_<FIELD>` environment variables (case-insensitive), then validated."""

    model_config = SettingsConfigDict(env_prefix="SITREP_", extra="ignore", validate_default=True)

    # --- the model --------------------------------------------------------------------------
    bundle: Path = Field(Path("artifacts/models/default"), description="Model bundle directory.")
    runtime: str = Field(DEFAULT_RUNTIME, description=f"One of {', '.join(RUNTIMES)}.")
    threads: int | None = Field(
        None,
        ge=1,
        description="ONNX Runtime intra-op threads (default: the CPUs this process may use). 1 on a 2-CPU host "
        "lowers a lone request's latency but caps throughput under load (sitrep/serving/README.md, benchmark).",
    )
    ort_spin: bool = Field(
        False,
        description="Let idle ONNX Runtime workers busy-wait (lower latency when the cores are otherwise idle; "
        "off by default because the HTTP loop shares the cores).",
    )

    # --- dynamic batching -------------------------------------------------------------------
    batching: bool = Field(True, description="Merge concurrent requests into one runtime call.")
    max_batch_size: int = Field(64, ge=1, description="Most sentences merged into one runtime call.")
    max_batch_tokens: int = Field(
        512,
        ge=1,
        description="Most padded tokens in one forward pass: the runtime splits a merged call into forward "
        "passes of similar-length sentences within this budget (CPU caches favour ~512; raise it on a GPU).",
    )
    max_wait_ms: float = Field(
        2.0, ge=0, description="How long the first queued request waits for others to join its batch."
    )
    queue_limit: int = Field(
        1024, ge=1, description="Most sentences accepted and not yet answered; beyond it, 503 + Retry-After."
    )
    retry_after_s: int = Field(
        1, ge=0, description="Retry-After seconds sent with a 503 when the queue is full."
    )

    # --- request limits ---------------------------------------------------------------------
    max_items: int = Field(256, ge=1, description="Most items in one request.")
    max_text_chars: int = Field(2000, ge=1, description="Longest `text` (characters) of one item.")
    max_document_chars: int = Field(100_000, ge=1, description="Longest `document` (characters) of one item.")
    max_sentences: int = Field(
        2048, ge=1, description="Most sentences in one request once documents are split."
    )
    long_text: TextPolicy = Field(
        "truncate",
        description=(
            "What to do with a text over max_text_chars or the model's max tokens: 'truncate' (classify the "
            "start and flag the item `truncated: true`) or 'refuse' (422 `text_too_long`)."
        ),
    )
    max_body_bytes: int = Field(1_048_576, ge=1, description="Largest request body (bytes); beyond it, 413.")
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest time a request body may take to arrive, from its first byte; beyond it, 408 and "
        "the connection is closed (a client that sends half a body holds nothing for long).",
    )

    # --- security ---------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated API keys. When set, /classify, /v1/model and /admin/* need "
            "`Authorization: Bearer KEY` or `X-API-Key: KEY`; /healthz, /readyz and /metrics stay open. "
            "Admin endpoints need a key from SITREP_ADMIN_KEYS."
        ),
    )
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated admin keys, for /admin/* only (a /classify key is not an admin key). "
        "Unset: admin endpoints answer 403.",
    )
    models_root: Path | None = Field(
        None,
        description="`/admin/reload` loads only bundles inside this directory (default: the parent of "
        "SITREP_BUNDLE); a relative `bundle` is taken relative to it.",
    )

    # --- HTTP conveniences -------------------------------------------------------------------
    gzip: bool = Field(
        True, description="Gzip responses of 1 KiB or more for clients that send `Accept-Encoding: gzip`."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins allowed to call the API from a browser (`*` for any); "
        "empty (the default): no CORS headers, browsers refuse cross-origin calls.",
    )

    # --- process ----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind (0.0.0.0 in a container).")
    port: int = Field(8000, ge=1, le=65535, description="Port to bind.")
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    log_level: str = Field("info", description="Python logging level for the service.")
    access_log: bool = Field(True, description="Log one line per request (never headers or keys).")

    @field_validator("api_keys", "admin_keys", "cors_origins", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        if value not in RUNTIMES:
            raise ValueError(f"unknown runtime {value!r}; choose one of {', '.join(RUNTIMES)}")
        return value

    # --- derived ----------------------------------------------------------------------------
    @property
    def intra_op_threads(self) -> int:
        """The explicit ONNX Runtime thread count: SITREP_THREADS, or every CPU this process may use
        (why every CPU: the measurements in sitrep/serving/README.md, "Threads")."""
        if self.threads:
            return self.threads
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1

    def key_values(self) -> list[str]:
        return [k.get_secret_value() for k in self.api_keys]

    def admin_key_values(self) -> list[str]:
        return [k.get_secret_value() for k in self.admin_keys]

    @property
    def reload_root(self) -> Path:
        """The directory `/admin/reload` may load bundles from (resolved: symlinks cannot lead out of it)."""
        root = self.models_root if self.models_root is not None else self.bundle.absolute().parent
        return root.resolve()
