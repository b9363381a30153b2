"""Give freed heap memory back to the operating system after a model loads.

Building an ONNX Runtime session allocates far more than the session keeps: the model file's protobuf,
the graph copies of each optimization pass, the initializers before constant folding (the int8 model's
compactly stored fp32 weights are rebuilt then: sitrep/training/fp16_weights.py) and before prepacking.
glibc's malloc keeps those freed pages in the process, so a serving process's RSS stays at its loading
peak: on the default int8 model, 531 MB after loading without the trim and 294 MB with it
(`python -m sitrep.bench.rss_probe BUNDLE FILE notrim` vs `default`; sitrep/models/README.md,
"Served-process memory"). The runtime calls `trim_heap` once after loading.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def trim_heap() -> bool:
    """Return free heap pages to the OS (glibc `malloc_trim(0)`); False where the C library has no such call."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return False
    if trim is None:
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
