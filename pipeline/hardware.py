"""What this machine's processors compute natively, read from /proc/cpuinfo without importing
torch.

Both the mining teacher (`dtype: auto`) and the trainer (`precision: auto`) choose bf16 on a
CPU only where the hardware computes it: there it runs several times faster than float32
(`bench/RESULTS.md`), while on other CPUs bf16 is emulated and slower. The embedded llama.cpp
backend asks about AMX (`embedded_backend.weights_in_plain_buffers`). The checks live here,
in the data contract's package, so `model/` can ask them without importing the mining stage.
"""

from __future__ import annotations

import functools


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); False where that cannot
    be told (then float32 stays the CPU default)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_amx() -> bool:
    """Whether this CPU has Intel AMX tiles (Sapphire Rapids and later)."""
    return "amx_tile" in cpu_flags()
