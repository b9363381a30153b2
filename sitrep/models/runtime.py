"""The inference core: load a bundle with a chosen runtime, classify a list of texts.

    clf = load("artifacts/models/default", runtime="onnx-int8")
    result = clf.classify(["The group said its fighters hit the base."])
    result.probs   # [n, 4] calibrated, independent per-label probabilities
    result.labels  # [["claim"]]

Runtimes: ``onnx-int8`` (CPU default), ``onnx`` (fp32), ``cuda`` (fp16 on ONNX Runtime's CUDA
execution provider) and ``torch`` (the reference; the only one that imports torch). Texts are
tokenized once, sorted by length into batches, run, and scattered back: output order is input order
whatever the batch size. Serving, batch scoring and eval all go through this class.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sitrep.models.bundle import HF_DIR, ONNX_FILES, SPM_FILE, TOKENIZER_FILE, Bundle, BundleError, load_bundle
from sitrep.models.calibration import calibrated_probs, labels_above
from sitrep.models.cpu import has_vnni
from sitrep.models.encoding import CALL_OVERHEAD_TOKENS, Encoded, TextEncoder, padded_batches
from sitrep.models.memory import trim_heap

RUNTIMES = ("onnx-int8", "onnx", "cuda", "torch")
DEFAULT_RUNTIME = "onnx-int8"


class RuntimeUnavailable(RuntimeError):
    """The chosen runtime cannot run here (e.g. `cuda` without a CUDA device)."""


class Backend(Protocol):
    on_gpu: bool

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


@dataclass
class Timings:
    tokenize_s: float = 0.0
    model_s: float = 0.0
    calibrate_s: float = 0.0  # calibration and thresholds (`classify_encoded`)


@dataclass
class Result:
    probs: np.ndarray  # [n, len(LABELS)] float32
    labels: list[list[str]]
    truncated: list[bool]
    timings: Timings = field(default_factory=Timings)


# ONNX Runtime's own fusion of Add + LayerNormalization into SkipLayerNormalization, off on the CPU provider: its
# fused CPU kernel is several times slower than the two ops, which is why export unfuses them
# (sitrep/training/skip_layernorm.py); left on, the session would fuse some of them back when it loads.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def cpu_session(path: str | Path, opts: Any) -> Any:
    """An ONNX Runtime CPU session on `path` with `opts` (from `session_options`), as every CPU runtime here opens one."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS))


def session_options(threads: int | None, spin: bool = True, optimize: bool = True) -> Any:
    """The ONNX Runtime session options every ONNX runtime here uses (benchmarks that profile add to them)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not spin:
        # Idle intra-op workers sleep instead of busy-waiting: costs a little latency, saves CPU for
        # the HTTP loop and tokenization when they share the cores (serving).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = threads or 0  # 0 = one per physical core
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # `optimize=False` keeps every named tensor of the graph (export's activation probes read them).
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return opts


class OnnxBackend:
    def __init__(
        self, path: Path, runtime: str, threads: int | None, spin: bool = True, optimize: bool = True
    ) -> None:
        import onnxruntime as ort

        opts = session_options(threads, spin, optimize)
        if runtime == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeUnavailable(
                "runtime 'cuda' needs onnxruntime-gpu with a CUDA device "
                f"(available providers: {ort.get_available_providers()})"
            )
        self.on_gpu = runtime == "cuda"
        if self.on_gpu:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        else:
            self.session = cpu_session(path, opts)
        if runtime == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeUnavailable("the CUDA execution provider did not initialise (no GPU visible?)")
        self.input_names = {i.name for i in self.session.get_inputs()}
        trim_heap()  # building the session freed several times what it keeps (sitrep/models/memory.py)

    def run(self, outputs: list[str], input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        """The named graph outputs for one padded batch (the graph may not take every input)."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.session.run(outputs, {k: v for k, v in feeds.items() if k in self.input_names})

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (logits,) = self.run(["logits"], input_ids, attention_mask)
        return logits.astype(np.float32)


class TorchBackend:
    def __init__(self, hf_dir: Path, threads: int | None, device: str | None) -> None:
        import torch

        from sitrep.models.torch_model import load_classifier

        if threads:
            torch.set_num_threads(threads)
        device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._init(load_classifier(hf_dir).to(device_).eval(), device_)

    def _init(self, model: Any, device: Any, amp_dtype: Any = None) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.device = device
        self.on_gpu = device.type == "cuda"
        self.amp_dtype = amp_dtype

    @classmethod
    def wrap(cls, model: Any, device: Any, amp_dtype: Any = None) -> TorchBackend:
        """A backend over a model already in memory (training's dev evaluation), with optional autocast."""
        backend = cls.__new__(cls)
        backend._init(model, device, amp_dtype)
        return backend

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), torch.autocast(
                self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
            ):
                out = self.model(
                    input_ids=torch.from_numpy(input_ids).to(self.device),
                    attention_mask=torch.from_numpy(attention_mask).to(self.device),
                )
        finally:
            self.model.train(was_training)
        return out.logits.float().cpu().numpy()


def batched_logits(
    encoder: TextEncoder,
    backend: Backend,
    encoded: Encoded,
    batch_size: int = 32,
    max_tokens: int | None = None,
    timings: Timings | None = None,
    overhead_tokens: int | None = None,
) -> np.ndarray:
    """Raw logits [n, labels] for tokenized texts: length-bucketed batches, padded, run, scattered back.

    `overhead_tokens`: cut batches where fewer padded tokens pay for the extra call (CPU; see
    `models.encoding.length_batches`); None keeps each batch whole (GPU, where a call costs more).
    """
    out: np.ndarray | None = None
    for idx, input_ids, mask in padded_batches(encoder, encoded, batch_size, max_tokens, overhead_tokens):
        t0 = time.perf_counter()
        logits = backend(input_ids, mask)
        if timings is not None:
            timings.model_s += time.perf_counter() - t0
        if out is None:
            out = np.zeros((len(encoded.ids), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


class Classifier:
    """A bundle plus one runtime. Thread-safe for concurrent `classify` calls on ONNX runtimes.

    On CPU a batch of texts of mixed lengths is cut into calls of similar lengths where the padding
    saved pays for the extra call (`split_batches`, default on; `models.encoding.length_batches`):
    a request of 32 sentences then costs about its real tokens, not 32 × its longest sentence.
    """

    def __init__(
        self,
        bundle: Bundle,
        runtime: str,
        backend: Backend,
        encoder: TextEncoder | None = None,
        split_batches: bool = True,
    ) -> None:
        self.bundle = bundle
        self.runtime = runtime
        self.backend = backend
        self.encoder = encoder or TextEncoder.for_bundle(bundle)
        self.thresholds = np.asarray(bundle.thresholds, dtype=np.float32)
        self.overhead_tokens = CALL_OVERHEAD_TOKENS if split_batches and not backend.on_gpu else None
        # The bundle reads a sentence's previous sentence in its document (`contexts` below) when given one: read from
        # the manifest once here, not on every request.
        self.uses_context = bundle.context == "previous"

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    @property
    def on_gpu(self) -> bool:
        """The model runs on a GPU (runtime `cuda`, or `torch` on a CUDA device)."""
        return self.backend.on_gpu

    def encode(self, texts: list[str], contexts: list[str] | None = None) -> Encoded:
        """Token ids; `contexts` (each text's previous sentence in its document, "" for none) are used only where
        the bundle was trained with them, and ignored otherwise."""
        return self.encoder.encode(texts, contexts if self.uses_context else None)

    def logits_encoded(
        self, encoded: Encoded, batch_size: int = 32, max_tokens: int | None = None, timings: Timings | None = None
    ) -> np.ndarray:
        if not encoded.ids:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return batched_logits(
            self.encoder, self.backend, encoded, batch_size, max_tokens, timings, self.overhead_tokens
        )

    def logits(self, texts: list[str], batch_size: int = 32, contexts: list[str] | None = None) -> np.ndarray:
        return self.logits_encoded(self.encode(texts, contexts), batch_size)

    def classify(
        self,
        texts: list[str],
        batch_size: int = 32,
        thresholds: list[float] | np.ndarray | None = None,
        max_tokens: int | None = None,
        contexts: list[str] | None = None,
    ) -> Result:
        timings = Timings()
        t0 = time.perf_counter()
        encoded = self.encode(list(texts), contexts)
        timings.tokenize_s = time.perf_counter() - t0
        return self.classify_encoded(encoded, batch_size, thresholds, max_tokens, timings)

    def classify_encoded(
        self,
        encoded: Encoded,
        batch_size: int = 32,
        thresholds: list[float] | np.ndarray | None = None,
        max_tokens: int | None = None,
        timings: Timings | None = None,
    ) -> Result:
        timings = timings or Timings()
        logits = self.logits_encoded(encoded, batch_size, max_tokens, timings)
        t0 = time.perf_counter()
        probs = calibrated_probs(logits, self.bundle.calibration)
        cut = self.thresholds if thresholds is None else np.asarray(thresholds, dtype=np.float32)
        labels = labels_above(probs, cut)
        timings.calibrate_s += time.perf_counter() - t0
        return Result(probs=probs, labels=labels, truncated=encoded.truncated, timings=timings)

    def warmup(self) -> None:
        """Run the model once on short and long inputs so the first request is not slow."""
        self.classify(["warm-up", "warm-up " * (self.bundle.max_length // 2)], batch_size=2)


def runtime_files(runtime: str, bundle: Bundle | None = None) -> list[str]:
    """The bundle files a runtime reads: its model and the tokenizer (the SentencePiece model where
    `bundle` has one — `TextEncoder.for_bundle` then never opens tokenizer.json — else tokenizer.json)."""
    tokenizer = SPM_FILE if bundle is not None and bundle.spm_file is not None else TOKENIZER_FILE
    if runtime == "torch":
        return [f"{HF_DIR}/config.json", f"{HF_DIR}/model.safetensors", tokenizer]
    return [ONNX_FILES[runtime], tokenizer]


def load(
    bundle: Bundle | str | os.PathLike[str],
    runtime: str = DEFAULT_RUNTIME,
    *,
    threads: int | None = None,
    device: str | None = None,
    verify: bool = True,
    spin: bool = True,
    split_batches: bool = True,
) -> Classifier:
    """Load a bundle with one runtime. Verifies the hashes of the files that runtime reads.

    `split_batches=False` keeps every batch one padded call (see `Classifier`; benchmarks compare both).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=False)
    needed = runtime_files(runtime, b)
    for rel in needed:
        if not b.has(rel):
            hint = " (run `sitrep export BUNDLE`)" if rel.startswith("onnx/") else ""
            raise BundleError(f"{b.path}: runtime {runtime!r} needs {rel}, which this bundle lacks{hint}")
    if verify:
        b.verify(needed)
    if runtime == "onnx-int8" and b.int8_needs_vnni and not has_vnni():
        warnings.warn(
            f"{b.path}: this int8 model has int8 weights, whose parity was checked on a CPU with VNNI; this CPU "
            "has none, and its AVX2 int8 kernels can saturate, so results may drift from the parity report. "
            "Run `sitrep export` on this machine (it then picks uint8 weights) or use runtime 'onnx'.",
            RuntimeWarning,
            stacklevel=2,
        )
    if runtime == "torch":
        backend: Backend = TorchBackend(b.hf_dir, threads, device)
    else:
        backend = OnnxBackend(b.onnx_file(runtime), runtime, threads, spin=spin)
    return Classifier(b, runtime, backend, split_batches=split_batches)
