"""RSS of one process serving an int8 file: after load, warm-up, and 1,000 mixed requests (issue 15).

    python -m sitrep.bench.rss_probe BUNDLE ONNX_FILE OPTIONS [REQUESTS]

OPTIONS, joined with "+": `default`, `noprepack` (session.disable_prepacking), `noarena` (no CPU memory
arena), `tokenizer.json` (the Hugging Face tokenizer even where the bundle has its SentencePiece model),
`notrim` (no `malloc_trim` after loading, which the runtime does: sitrep/models/memory.py).
Prints one JSON line: RSS (MB) after imports, after load, after warm-up, after REQUESTS (default 1,000)
requests of 1–32 dev sentences, and the peak (VmHWM). Run it once per file and option set (each in a
fresh process).
"""

from __future__ import annotations

import json
import os
import random
import sys

import psutil


def rss() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def hwm() -> float:
    with open("/proc/self/status") as f:
        return next(round(int(line.split()[1]) / 1024, 1) for line in f if line.startswith("VmHWM"))


def main(bundle_path: str, path: str, options: str, requests: str = "1000") -> None:
    import onnxruntime as ort

    from sitrep.models.bundle import load_bundle
    from sitrep.models.corpus import read_many
    from sitrep.models.encoding import TextEncoder
    from sitrep.models.memory import trim_heap
    from sitrep.models.runtime import Classifier, OnnxBackend, cpu_session

    base = rss()
    bundle = load_bundle(bundle_path, verify=False)
    backend = OnnxBackend.__new__(OnnxBackend)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    if "noprepack" in options:
        so.add_session_config_entry("session.disable_prepacking", "1")
    if "noarena" in options:
        so.enable_cpu_mem_arena = False
    backend.session = cpu_session(path, so)
    if "notrim" not in options.split("+"):
        trim_heap()  # as the runtime does after loading (sitrep/models/memory.py)
    backend.input_names = {i.name for i in backend.session.get_inputs()}
    backend.on_gpu = False
    hf = "tokenizer.json" in options.split("+")
    encoder = TextEncoder(bundle.tokenizer_file, bundle.max_length) if hf else TextEncoder.for_bundle(bundle)
    clf = Classifier(bundle, "onnx-int8", backend, encoder=encoder)
    loaded = rss()
    clf.warmup()
    warm = rss()
    texts = [e.text for e in read_many("data/dev.jsonl")]
    rng = random.Random(0)
    for _ in range(int(requests)):
        clf.classify(rng.sample(texts, rng.choice([1, 1, 1, 2, 4, 8, 32])), batch_size=32)
    print(json.dumps({"file": os.path.basename(path), "options": options,
                      "tokenizer": "tokenizer.json" if encoder.spm is None else "sentencepiece",
                      "imports_mb": base, "loaded_mb": loaded, "warm_mb": warm, "requests": int(requests),
                      f"after_{requests}_mixed_mb": rss(), "peak_mb": hwm()}))


if __name__ == "__main__":
    args = sys.argv[1:]
    wants_help = "-h" in args or "--help" in args
    usable = len(args) == 3 or (len(args) == 4 and args[3].isdigit())
    if wants_help or not usable:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(0 if wants_help else 2)
    main(*args)
