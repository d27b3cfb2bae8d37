"""This machine's limits, measured in the run, and the work each stage does against them.

A stage cannot run faster than its roofline bound: the larger of its floating-point work over
the measured matmul peak and the weight bytes it reads over the rate at which a few-row matmul
streams weights from memory (what a decoder step over a handful of beams does). The benchmark
prints each stage's time against that bound: 1.0 would be the machine's limit.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from core.models.precision import dtype_name, native_bf16

aten = torch.ops.aten


def _cpu_sdpa_flop(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
                   **kwargs: Any) -> int:
    return int(sdpa_flop_count(query, key, value))


def _native_mha_flop(query: Any, key: Any, value: Any, embed_dim: int, *args: Any,
                     out_shape: Any = None, **kwargs: Any) -> int:
    """nn.MultiheadAttention's inference fast path: projections, attention, output."""
    batch, length, width = query
    keys = key[1]
    projections = 2 * batch * width * width * (2 * length + 2 * keys)  # q and out; k and v
    return projections + 4 * batch * length * keys * width


# torch's counter knows the CUDA attention kernels and not these: SDPA on a CPU, and the fused
# attention nn.MultiheadAttention runs in inference (open_clip's image tower uses it).
CPU_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
                 aten._native_multi_head_attention: _native_mha_flop}
PEAK_SIZE = 2048  # square matmul for the peak: 17 GFLOP
STREAM_ROWS = 6  # rows of a few-row matmul: one picture's beams
STREAM_SHAPE = (3072, 768)  # one CoCa MLP weight; enough of them to overflow the caches
STREAM_BYTES = 192 * 2**20


def processor_name() -> str:
    """The processor's model name (Linux /proc/cpuinfo, else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.split(":")[0].strip() in ("model name", "Model", "Hardware"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_time(run: Callable[[], object], repeats: int = 3) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


@dataclass(frozen=True)
class Limits:
    """Peak matmul FLOP/s and few-row weight-streaming bytes/s, per dtype."""

    peak: dict[torch.dtype, float]
    bandwidth: dict[torch.dtype, float]

    def best_with(self, other: Limits) -> Limits:
        """The best of two measurements: a bound must hold whenever the machine was free."""
        return Limits({d: max(v, other.peak.get(d, 0.0)) for d, v in self.peak.items()},
                      {d: max(v, other.bandwidth.get(d, 0.0)) for d, v in self.bandwidth.items()})

    def bound(self, flops: float, weight_bytes: float, dtype: torch.dtype) -> float:
        return max(flops / self.peak[dtype], weight_bytes / self.bandwidth[dtype])

    def describe(self) -> str:
        peaks = ", ".join(f"{dtype_name(d)} {v / 1e9:,.0f}" for d, v in self.peak.items())
        rates = ", ".join(f"{dtype_name(d)} {v / 1e9:.1f}" for d, v in self.bandwidth.items())
        return (f"matmul peak GFLOP/s: {peaks}; a {STREAM_ROWS}-row matmul streams weights "
                f"at GB/s: {rates}")


def measure_limits(device: torch.device,
                   dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)) -> Limits:
    peak, bandwidth = {}, {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for dtype in dtypes:
            a = torch.randn(PEAK_SIZE, PEAK_SIZE, device=device, dtype=dtype)
            b = torch.randn(PEAK_SIZE, PEAK_SIZE, device=device, dtype=dtype)
            peak[dtype] = 2 * PEAK_SIZE**3 / best_time(lambda a=a, b=b: (a @ b, sync()))
            size = STREAM_SHAPE[0] * STREAM_SHAPE[1] * a.element_size()
            weights = [torch.randn(STREAM_SHAPE, device=device, dtype=dtype)
                       for _ in range(max(1, STREAM_BYTES // size))]
            x = torch.randn(STREAM_ROWS, STREAM_SHAPE[1], device=device, dtype=dtype)

            def stream(weights: list[torch.Tensor] = weights, x: torch.Tensor = x) -> None:
                for w in weights:
                    torch.nn.functional.linear(x, w)
                sync()

            bandwidth[dtype] = size * len(weights) / best_time(stream)
    return Limits(peak, bandwidth)


def header_lines(device: torch.device) -> list[str]:
    """Processor, native bf16, load average: what the figures below depend on."""
    found = native_bf16() or "none (bf16 would be emulated)"
    gpu = f"; GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    one, five, fifteen = os.getloadavg()
    return [f"processor: {processor_name()} ({platform.machine()}, {os.cpu_count()} CPUs){gpu}",
            f"native bf16: {found}",
            f"load average: {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min; the machine is "
            "shared: compare ratios within one run)"]


class WeightReads(TorchDispatchMode):
    """Bytes of weights (parameters and buffers of `modules`) that the ops read.

    Each op that takes a weight counts its bytes once: a weight read by the step's matmul is
    read from memory once per step. Views read nothing; an embedding reads only its rows.
    """

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        super().__init__()
        self.storages = {t.untyped_storage().data_ptr() for m in modules
                         for t in (*m.parameters(), *m.buffers())}
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if not func.is_view:
            if func is aten.embedding.default:
                weight, indices = args[0], args[1]
                if self._is_weight(weight):
                    self.bytes += indices.numel() * weight.shape[-1] * weight.element_size()
            else:
                self.bytes += sum(t.numel() * t.element_size()
                                  for t in tree_leaves((args, kwargs))
                                  if isinstance(t, torch.Tensor) and self._is_weight(t))
        return func(*args, **kwargs)

    def _is_weight(self, t: torch.Tensor) -> bool:
        return t.device.type != "meta" and t.untyped_storage().data_ptr() in self.storages


@dataclass
class Work:
    flops: float = 0.0
    weight_bytes: float = 0.0


@contextmanager
def counting(modules: list[torch.nn.Module]) -> Iterator[Work]:
    """Count the FLOPs and the weight bytes of what runs inside (slower: run it apart)."""
    work = Work()
    reads = WeightReads(modules)
    # The counter's module tracker hooks the backward of weights that want gradients, which
    # inference-mode tensors do not have: nothing here trains, so none wants one meanwhile.
    wanted = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in wanted:
        p.requires_grad_(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as flops, reads:
            yield work
    finally:
        for p in wanted:
            p.requires_grad_(True)
    work.flops, work.weight_bytes = float(flops.get_total_flops()), float(reads.bytes)


def roofline_cells(seconds: float, work: Work, bound: float) -> str:
    """GFLOP, weight GB, the bound and the time against it, as table cells."""
    gflop = work.flops / 1e9
    flops = f"{gflop:,.0f}" if gflop >= 100 else f"{gflop:.3g}"
    ratio = f"{seconds / bound:.1f}" if bound > 0 else "-"
    return f"{flops:>9} {work.weight_bytes / 1e9:>8.2f} {bound:>8.2f} s {ratio:>8}"


ROOFLINE_HEADER = f"{'GFLOP':>9} {'GB read':>8} {'bound':>10} {'x bound':>8}"
