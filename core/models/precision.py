"""Which device and number format the models run in, and why (one line for the start-up log).

`[models] dtype = "auto"`: fp16 on CUDA; on a CPU bf16 when the processor computes bf16
natively (Intel AMX, AVX-512 BF16, Arm BF16) AND a short matmul probe shows it at least twice
as fast as fp32 here; fp32 otherwise. Processors without native bf16 emulate it, slower than
fp32, and a native unit is no promise of speed on its own (a busy or throttled core), hence
the probe.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# bf16 must beat fp32 by this much in the probe to be chosen on a CPU.
BF16_MIN_SPEEDUP = 2.0
PROBE_SIZE = 1024  # one product is 2.1 GFLOP: ~10 ms in bf16, ~20-40 ms in fp32 on 2 cores
PROBE_REPEATS = 3


@dataclass(frozen=True)
class Precision:
    """The device and dtype the models run in, and the reason, said once at start-up."""

    device: torch.device
    dtype: torch.dtype
    reason: str

    def describe(self) -> str:
        where = "the CPU" if self.device.type == "cpu" else self.device.type
        return f"models run in {dtype_name(self.dtype)} on {where}: {self.reason}"


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype).removeprefix("torch."))


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when available, else the CPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"[models] device: {name!r} is not allowed; use 'auto', 'cpu' or 'cuda'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("[models] device: 'cuda' is set but torch sees no CUDA GPU; "
                          "use 'auto' or 'cpu'")
    return torch.device(name)


def native_bf16() -> str:
    """The processor's native bf16 arithmetic, named ("" when it has none)."""
    if torch.cpu._is_amx_tile_supported():
        return "AMX bf16"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX-512 BF16"
    if platform.machine().lower() in ("aarch64", "arm64") and _arm_bf16():
        return "Arm BF16"
    return ""


def _arm_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.startswith("Features") and "bf16" in line.split()
               for line in text.splitlines())


def probe_bf16_speedup(size: int = PROBE_SIZE, repeats: int = PROBE_REPEATS) -> float:
    """How many times faster a square bf16 matmul runs than fp32 here (best of `repeats`)."""
    gen = torch.Generator().manual_seed(0)
    a32 = torch.randn(size, size, generator=gen)
    b32 = torch.randn(size, size, generator=gen)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    with torch.inference_mode():
        torch.mm(a32, b32), torch.mm(a16, b16)  # first calls pick and pack kernels
        for _ in range(repeats):  # interleaved, so a busy moment hurts both alike
            for a, b in ((a32, b32), (a16, b16)):
                started = time.perf_counter()
                torch.mm(a, b)
                best[a.dtype] = min(best[a.dtype], time.perf_counter() - started)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def choose_precision(device_name: str, setting: str = "auto", *,
                     test_models: bool = False) -> Precision:
    """The device and dtype for `[models] device` and `[models] dtype`, with the reason."""
    device = resolve_device(device_name)
    if setting != "auto":
        if setting not in DTYPES:
            raise ConfigError(f"[models] dtype: {setting!r} is not allowed; use 'auto', "
                              f"{', '.join(repr(d) for d in DTYPES)}")
        dtype = DTYPES[setting]
        if device.type == "cuda" and dtype == torch.bfloat16 \
                and not torch.cuda.is_bf16_supported():
            raise ConfigError("[models] dtype: 'bf16' is set but this GPU has no bf16; "
                              "use 'auto', 'fp16' or 'fp32'")
        return Precision(device, dtype, f"[models] dtype = {setting!r}")
    if device.type == "cuda":
        return Precision(device, torch.float16, "dtype 'auto' on a GPU")
    if test_models:
        return Precision(device, torch.float32,
                         "the tiny test models stay in fp32 under dtype 'auto'")
    found = native_bf16()
    if not found:
        return Precision(device, torch.float32,
                         "no native bf16 found (AMX, AVX-512 BF16 or Arm BF16)")
    speedup = probe_bf16_speedup()
    if speedup >= BF16_MIN_SPEEDUP:
        return Precision(device, torch.bfloat16,
                         f"{found} found, probe {speedup:.1f}x faster than fp32")
    return Precision(device, torch.float32, f"{found} found, but the probe ran bf16 only "
                     f"{speedup:.1f}x faster than fp32 (at least {BF16_MIN_SPEEDUP:g}x wanted)")
