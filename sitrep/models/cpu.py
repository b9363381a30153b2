"""What the CPU can do, where it decides which int8 kernels are safe.

ONNX Runtime runs a MatMul with uint8 activations and int8 weights (u8s8) on x86 through one of two
instruction families. With VNNI (AVX512-VNNI or AVX-VNNI) products accumulate straight into int32 and
u8s8 is the fastest path (measured against u8u8: `sitrep bench int8`, sitrep/models/README.md). Without VNNI the
AVX2 kernel sums pairs of products into int16 first and can saturate, so an int8-weight model that
passed its parity gate on a VNNI machine may lose accuracy on an older CPU; uint8 weights (u8u8) are
safe everywhere. Export only tries int8 weights where VNNI is present, records that in the bundle,
and the runtime warns when such a model is loaded on a CPU without it.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
# bf16 dot products in hardware (AVX512-BF16, AMX): there PyTorch's CPU autocast to bf16 runs training steps about
# twice as fast as fp32 (`sitrep bench train-step`); without them PyTorch emulates bf16, so training stays fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@cache
def _cpuinfo(key: str) -> str | None:
    """The first `key : value` line of Linux's /proc/cpuinfo (None elsewhere, or without that key)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere: callers then assume the least)."""
    return frozenset((_cpuinfo("flags") or "").split())


def _x86_with(flags: tuple[str, ...]) -> bool:
    return platform.machine().lower() in ("x86_64", "amd64") and any(f in cpu_flags() for f in flags)


def has_vnni() -> bool:
    """True when u8s8 int8 kernels cannot saturate here (x86 with AVX512-VNNI or AVX-VNNI)."""
    return _x86_with(VNNI_FLAGS)


def has_bf16() -> bool:
    """True when the CPU computes bf16 dot products natively (x86 with AVX512-BF16 or AMX-BF16)."""
    return _x86_with(BF16_FLAGS)


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()
