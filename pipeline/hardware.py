"""What this machine's processors compute natively, read without importing torch.

Both the mining teacher (`dtype: auto`) and the trainer (`precision: auto`) choose bf16 on a
CPU only where the hardware computes it: there its matmuls run 4x faster than float32's (a
MiniLM training step 1.5x, `bench/RESULTS.md`), while on other CPUs bf16 is emulated and
slower. The check lives here, beside the data contract, so `model/` can ask it without
importing the mining stage.
"""

from __future__ import annotations


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo;
    False where that cannot be told (then float32 stays the CPU default)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        return False
    return False
