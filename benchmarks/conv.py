"""Convolution micro-benchmarks: tinygen's conv2d and conv_transpose2d against GEMM and PyTorch.

    python -m benchmarks.conv                     # the full run: 1 and 2 threads, table + JSON
    python -m benchmarks.conv --only DCGAN        # only the layers whose name contains DCGAN
    python -m benchmarks.conv --repeats 5 --threads 1
    PYTHONPATH=. python -m benchmarks.conv --gpu-only   # on a machine with cupy and a GPU

What it measures, for each layer shape (the DCGAN-28 and ConvVAE-28 layers at
batch 64, and the generic shapes of issue 3), in float32:

- forward, and forward + backward (gradients of input, weight and bias), in
  milliseconds: median, min and max of --repeats runs after two warm-up runs;
- GFLOP/s (forward: 2*N*OH*OW*weight.size; forward + backward: three times
  that, one GEMM each for y, gx and gW) and its fraction of the float32 GEMM
  peak that this same run measures with NumPy's BLAS (benchmarks/gemm.py).
  These count a direct convolution's multiplications, for tinygen and torch
  alike; on the layers marked "winograd" or "winograd-phases" (the last
  column) tinygen does 2.25x or 1.78x fewer (kernels/winograd.py), so their
  GFLOP/s are effective rates and their fraction of the peak can pass 100%;
- the bytes of the column buffer (per batch chunk, and for the whole batch),
  and the peak memory NumPy held during one forward + backward (tracemalloc);
- the same layer in PyTorch, when torch is installed, timed interleaved with
  tinygen (one run of each in turn, so both see the same machine load), and
  the ratio tinygen / torch (below 1: tinygen is faster), of the medians and
  ("r.min") of the fastest runs, which other processes on a shared machine
  disturb least;
- the same layer with the NumPy reference kernels (TINYGEN_KERNELS=reference),
  interleaved too, to show what the Numba kernels earn (nothing on the 1x1 and
  whole-input layers, which need no im2col);
- im2col and col2im alone: reference, Numba serial, Numba parallel;
- Numba's compile time, apart: cold (an empty cache, in a fresh process) and
  the in-process warm-up (loading the cache).

Clocks: with 1 thread, the CPU time of this thread (time.thread_time), which
other processes on a shared machine barely disturb, and the wall clock beside
it; with 2 threads, the wall clock. On a GPU (cupy importable) the same table
runs on cupy arrays (and torch CUDA), the device synchronized before every clock
reading.

Settling: after a call, the idle threads of a thread pool keep spinning for a
while before they sleep, holding cores that the next call, timed with 2
threads, needs. Seen here: tinygen's DCGAN-D2 forward pass in lanes took 6.7 ms
alone, 11.7 ms right after a torch call (torch's OpenMP threads still
spinning) and 9.2 ms 5 ms after it; the 2-thread GEMM peak read 106 GFLOP/s
right after the parallel Numba kernels and 190 alone. So with 2 or more
threads each timed call waits --settle seconds (0.02), runs untimed for
WAKE_SECONDS (at least once: this wakes its own pools), then runs timed. A
longer sleep is no better: after 0.1 s idle both engines ran slower again.
Why the untimed calls fill 10 ms: after 20 ms idle, with tinygen's lane threads
polling for work (kernels/lanes.py), a VAE-E1 forward + backward took 2.2 ms
(median) but 12 ms in one call out of three when timed after one untimed call;
after four untimed calls (about 8 ms), 1.6 ms and no call over 7.3 ms. The
machine needs a few milliseconds of work to come back to speed, whichever engine
runs. Part of that delay was tinygen's own, found later: a lane thread polling
for its partner held the core that the partner had been woken on. Since the
polling yields its core every few microseconds (cpu.wait_for_flag), a 2-thread
VAE-E1 forward pass timed this way takes 0.53 ms (median) where it took 2.4 to
3.9 ms.

OpenBLAS: when OPENBLAS_CORETYPE (or OPENBLAS_L2_SIZE) is set, OpenBLAS may run
the kernel of an older core, much slower than this CPU allows, while PyTorch
uses its own. Launched from the command line, this benchmark restarts itself
once without those two variables (--keep-coretype keeps them) and reports the
BLAS kernel that threadpoolctl then sees. The tests never change them.

Results print as tables and are written as JSON to benchmarks/results/.
"""

from __future__ import annotations

import os
import sys

_BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _restart_without_coretype() -> None:
    """Re-run this command without OPENBLAS_CORETYPE/L2_SIZE (only from the command line)."""
    if "--keep-coretype" in sys.argv or os.environ.get("TINYGEN_BENCH_RESTARTED"):
        return
    removed = {k: os.environ[k] for k in _BLAS_VARIABLES if k in os.environ}
    if not removed:
        return
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARIABLES}
    env["TINYGEN_BENCH_RESTARTED"] = ",".join(f"{k}={v}" for k, v in removed.items())
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.conv", *sys.argv[1:]], env)


if __name__ == "__main__":
    _restart_without_coretype()  # before numpy loads OpenBLAS

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import tinygen as tg  # noqa: E402
from benchmarks.gemm import blas_info, gemm_peak  # noqa: E402
from tinygen import allocator, kernels  # noqa: E402
from tinygen.backend import cupy_module, cupy_unavailable_reason  # noqa: E402
from tinygen.kernels import conv_arrays, lanes, reference  # noqa: E402
from tinygen.kernels.reference import conv_output_size  # noqa: E402
from tinygen.ops.conv import conv2d, conv_transpose2d  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------
# The layers
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Layer:
    """One convolution to time. For conv_transpose2d, x_shape is its (small) input."""

    name: str
    op: str  # "conv2d" or "conv_transpose2d"
    x_shape: tuple
    weight_shape: tuple
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    bias: bool = False

    def conv2d_geometry(self) -> tuple:
        """(x_shape, weight_shape) of the conv2d whose columns this layer uses."""
        if self.op == "conv2d":
            return self.x_shape, self.weight_shape
        N, _, H, W = self.x_shape
        C_in, C_out, KH, KW = self.weight_shape
        size = [
            (i - 1) * self.stride - 2 * self.padding + self.dilation * (k - 1) + 1
            for i, k in ((H, KH), (W, KW))
        ]
        return (N, C_out, *size), self.weight_shape

    def flops(self) -> int:
        """Forward: 2 * N * (OH*OW of the small side) * weight.size multiply-adds."""
        (N, _, H, W), weight_shape = self.conv2d_geometry()
        OH = conv_output_size(H, weight_shape[2], self.stride, self.padding, self.dilation)
        OW = conv_output_size(W, weight_shape[3], self.stride, self.padding, self.dilation)
        return 2 * N * OH * OW * int(np.prod(weight_shape))

    def out_channels(self) -> int:
        return self.weight_shape[0] if self.op == "conv2d" else self.weight_shape[1]


def layers() -> list[Layer]:
    B = 64
    return [
        # DCGAN-28 discriminator (no bias)
        Layer("DCGAN-D1 conv 1->64 k4 s2 p1", "conv2d", (B, 1, 28, 28), (64, 1, 4, 4), 2, 1),
        Layer("DCGAN-D2 conv 64->128 k4 s2 p1", "conv2d", (B, 64, 14, 14), (128, 64, 4, 4), 2, 1),
        Layer("DCGAN-D3 conv 128->1 k7", "conv2d", (B, 128, 7, 7), (1, 128, 7, 7), 1, 0),
        # DCGAN-28 generator (no bias)
        Layer("DCGAN-G1 convT 64->128 k7", "conv_transpose2d", (B, 64, 1, 1), (64, 128, 7, 7)),
        Layer(
            "DCGAN-G2 convT 128->64 k4 s2 p1",
            "conv_transpose2d",
            (B, 128, 7, 7),
            (128, 64, 4, 4),
            2,
            1,
        ),
        Layer(
            "DCGAN-G3 convT 64->1 k4 s2 p1",
            "conv_transpose2d",
            (B, 64, 14, 14),
            (64, 1, 4, 4),
            2,
            1,
        ),
        # ConvVAE-28 (with bias)
        Layer(
            "VAE-E1 conv 1->32 k4 s2 p1", "conv2d", (B, 1, 28, 28), (32, 1, 4, 4), 2, 1, bias=True
        ),
        Layer(
            "VAE-E2 conv 32->64 k4 s2 p1",
            "conv2d",
            (B, 32, 14, 14),
            (64, 32, 4, 4),
            2,
            1,
            bias=True,
        ),
        Layer(
            "VAE-D1 convT 64->32 k4 s2 p1",
            "conv_transpose2d",
            (B, 64, 7, 7),
            (64, 32, 4, 4),
            2,
            1,
            bias=True,
        ),
        Layer(
            "VAE-D2 convT 32->1 k4 s2 p1",
            "conv_transpose2d",
            (B, 32, 14, 14),
            (32, 1, 4, 4),
            2,
            1,
            bias=True,
        ),
        # generic shapes of issue 3
        Layer(
            "generic (32,3,32,32)x(64,3,3,3) p1", "conv2d", (32, 3, 32, 32), (64, 3, 3, 3), 1, 1
        ),
        Layer(
            "generic (32,64,32,32)x(64,64,3,3) p1",
            "conv2d",
            (32, 64, 32, 32),
            (64, 64, 3, 3),
            1,
            1,
        ),
        Layer(
            "generic (16,128,28,28)x(128,128,3,3) p1",
            "conv2d",
            (16, 128, 28, 28),
            (128, 128, 3, 3),
            1,
            1,
        ),
        Layer(
            "generic (32,3,32,32)x(64,3,3,3) d2 p2",
            "conv2d",
            (32, 3, 32, 32),
            (64, 3, 3, 3),
            1,
            2,
            2,
        ),
        Layer(
            "generic (32,64,32,32)x(64,64,3,3) d2 p2",
            "conv2d",
            (32, 64, 32, 32),
            (64, 64, 3, 3),
            1,
            2,
            2,
        ),
        Layer(
            "generic (16,128,28,28)x(128,128,3,3) d2 p2",
            "conv2d",
            (16, 128, 28, 28),
            (128, 128, 3, 3),
            1,
            2,
            2,
        ),
        Layer(
            "generic (8,256,14,14)x(256,256,1,1)",
            "conv2d",
            (8, 256, 14, 14),
            (256, 256, 1, 1),
            1,
            0,
        ),
    ]


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


class Clock:
    """Reads the wall clock and this thread's CPU time, synchronizing a GPU first."""

    def __init__(self, sync=None) -> None:
        self.sync = sync

    def read(self) -> tuple[float, float]:
        if self.sync is not None:
            self.sync()
        return time.perf_counter(), time.thread_time()


def _summary(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
    }


WAKE_SECONDS = 0.01  # untimed calls before each timed one, after the settling sleep


def time_interleaved(functions: dict, repeats: int, clock: Clock, settle: float = 0.0) -> dict:
    """Run each function twice to warm up, then `repeats` rounds of one call of each in turn.

    With `settle` > 0, each timed call comes after `settle` seconds of sleep, which let
    the thread pools of the function before it stop spinning, and untimed calls of the
    same function for WAKE_SECONDS (at least one), which wake its own pools and the
    machine (see --settle).
    """
    for fn in functions.values():
        fn()
        fn()
    wall = {name: [] for name in functions}
    cpu = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            if settle:
                time.sleep(settle)
                awake = time.perf_counter() + WAKE_SECONDS
                fn()
                while time.perf_counter() < awake:
                    fn()
            w0, c0 = clock.read()
            fn()
            w1, c1 = clock.read()
            wall[name].append(w1 - w0)
            cpu[name].append(c1 - c0)
    return {name: {"wall": _summary(wall[name]), "cpu": _summary(cpu[name])} for name in functions}


def tinygen_functions(layer: Layer, arrays: dict, mode: str) -> Any:
    op = conv2d if layer.op == "conv2d" else conv_transpose2d
    options = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    x, w, b, gy = arrays["x"], arrays["w"], arrays.get("b"), arrays["gy"]

    def forward():
        with tg.no_grad():
            return op(tg.Tensor(x), tg.Tensor(w), None if b is None else tg.Tensor(b), **options)

    def forward_backward():
        leaves = [tg.Tensor(a, requires_grad=True) for a in (x, w, b) if a is not None]
        y = op(*leaves[:2], leaves[2] if b is not None else None, **options)
        y.backward(tg.Tensor(gy))
        return [t.grad for t in leaves]

    return forward if mode == "fwd" else forward_backward


def torch_functions(layer: Layer, arrays: dict, mode: str, torch: Any, device: str) -> Any:
    F = torch.nn.functional
    op = F.conv2d if layer.op == "conv2d" else F.conv_transpose2d
    options = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    host = {k: (v.get() if hasattr(v, "get") else v) for k, v in arrays.items() if v is not None}
    t = {k: torch.tensor(v, device=device) for k, v in host.items()}

    def forward():
        with torch.no_grad():
            return op(t["x"], t["w"], t.get("b"), **options)

    def forward_backward():
        leaves = [t[k].clone().requires_grad_(True) for k in ("x", "w", "b") if k in t]
        y = op(*leaves[:2], leaves[2] if "b" in t else None, **options)
        y.backward(t["gy"])
        return [leaf.grad for leaf in leaves]

    return forward if mode == "fwd" else forward_backward


def make_arrays(layer: Layer, xp: Any) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer.x_shape, dtype=np.float32)
    w = (rng.standard_normal(layer.weight_shape, dtype=np.float32) * 0.05).astype(np.float32)
    b = rng.standard_normal(layer.out_channels(), dtype=np.float32) if layer.bias else None
    with tg.no_grad():
        op = conv2d if layer.op == "conv2d" else conv_transpose2d
        y_shape = op(
            x[:1], w, stride=layer.stride, padding=layer.padding, dilation=layer.dilation
        ).shape
    gy = rng.standard_normal((layer.x_shape[0], *y_shape[1:]), dtype=np.float32)
    arrays = {"x": x, "w": w, "b": b, "gy": gy}
    return {k: (None if v is None else xp.asarray(v)) for k, v in arrays.items()}


# ---------------------------------------------------------------------------
# One table: every layer at one thread setting (or on the GPU)
# ---------------------------------------------------------------------------


def run_table(
    layer_list: list[Layer],
    repeats: int,
    torch: Any,
    with_reference: bool,
    peak: float,
    clock_name: str,
    clock: Clock,
    xp: Any = np,
    torch_device: str = "cpu",
    settle: float = 0.0,
) -> list[dict]:
    rows = []
    for layer in layer_list:
        arrays = make_arrays(layer, xp)
        x_conv, w_conv = layer.conv2d_geometry()
        plan = conv_arrays.plan(
            x_conv, w_conv, (layer.stride,) * 2, (layer.padding,) * 2, (layer.dilation,) * 2, 1
        )
        row: dict[str, Any] = {
            "layer": layer.name,
            "op": layer.op,
            "x_shape": layer.x_shape,
            "weight_shape": layer.weight_shape,
            "stride": layer.stride,
            "padding": layer.padding,
            "dilation": layer.dilation,
            "bias": layer.bias,
            "gflop_forward": layer.flops() / 1e9,
            **plan,
        }
        for mode, flop_factor in (("fwd", 1), ("fwd+bwd", 3)):
            functions = {"tinygen": tinygen_functions(layer, arrays, mode)}
            if torch is not None:
                functions["torch"] = torch_functions(layer, arrays, mode, torch, torch_device)
            if with_reference:
                functions["reference"] = _with_reference_kernels(functions["tinygen"])
            timings = time_interleaved(functions, repeats, clock, settle)
            ours = timings["tinygen"][clock_name]["median_ms"]
            gflops = flop_factor * layer.flops() / (ours / 1e3) / 1e9
            entry = {"timings": timings, "gflop_per_s": gflops, "fraction_of_peak": gflops / peak}
            if torch is not None:
                entry["ratio_vs_torch"] = ours / timings["torch"][clock_name]["median_ms"]
                # the ratio of the fastest runs: steadier when other processes load the machine
                entry["ratio_vs_torch_of_min"] = (
                    timings["tinygen"][clock_name]["min_ms"]
                    / timings["torch"][clock_name]["min_ms"]
                )
            if with_reference:
                entry["ratio_vs_reference"] = ours / timings["reference"][clock_name]["median_ms"]
            row[mode] = entry
        if xp is np:
            row["peak_mib_fwd_bwd"] = peak_memory_mib(tinygen_functions(layer, arrays, "fwd+bwd"))
        rows.append(row)
        print(_format_row(row, clock_name), flush=True)
    return rows


def peak_memory_mib(fn) -> float:
    """The most memory that NumPy held at once during one call, above what it held before.

    NumPy reports its array buffers to tracemalloc, so this counts the column
    buffers, the outputs and the gradients (not the memory of BLAS or Numba).
    """
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
        del result
    finally:
        tracemalloc.stop()
    return (peak - before) / 2**20


def _with_reference_kernels(fn):
    def run():
        previous = os.environ.get("TINYGEN_KERNELS")
        os.environ["TINYGEN_KERNELS"] = "reference"
        try:
            return fn()
        finally:
            if previous is None:
                del os.environ["TINYGEN_KERNELS"]
            else:
                os.environ["TINYGEN_KERNELS"] = previous

    return run


HEADER = (
    f"{'layer':44s} {'fwd ms':>7s} {'torch':>7s} {'ratio':>5s} | {'fwd+bwd ms [min-max]':>22s} "
    f"{'torch':>7s} {'ratio':>5s} {'r.min':>5s} {'GF/s':>6s} {'%peak':>5s} {'ref ms':>7s} "
    f"{'/ref':>5s} {'peak MiB':>8s} "
    f"{'col KiB chunk/batch':>19s}"
)


def _format_row(row: dict, clock_name: str) -> str:
    f, fb = row["fwd"], row["fwd+bwd"]

    def ms(entry, who, key="median_ms"):
        t = entry["timings"].get(who)
        return f"{t[clock_name][key]:7.2f}" if t else f"{'-':>7s}"

    def ratio(entry, key):
        return f"{entry[key]:5.2f}" if key in entry else f"{'-':>5s}"

    spread = (
        f"{fb['timings']['tinygen'][clock_name]['median_ms']:7.2f} "
        f"[{fb['timings']['tinygen'][clock_name]['min_ms']:.1f}-"
        f"{fb['timings']['tinygen'][clock_name]['max_ms']:.1f}]"
    )
    columns = (
        f"{row['column_bytes_per_chunk'] >> 10}/{row['column_bytes_whole_batch'] >> 10}"
        if row["path"] == "im2col"
        else row["path"]
    )
    return (
        f"{row['layer'][:44]:44s} {ms(f, 'tinygen')} {ms(f, 'torch')} {ratio(f, 'ratio_vs_torch')}"
        f" | {spread:>22s} {ms(fb, 'torch')} {ratio(fb, 'ratio_vs_torch')} "
        f"{ratio(fb, 'ratio_vs_torch_of_min')} "
        f"{fb['gflop_per_s']:6.1f} {100 * fb['fraction_of_peak']:5.1f} {ms(fb, 'reference')} "
        f"{ratio(fb, 'ratio_vs_reference')} {row.get('peak_mib_fwd_bwd', float('nan')):8.1f} "
        f"{columns:>19s}"
    )


# ---------------------------------------------------------------------------
# im2col and col2im alone
# ---------------------------------------------------------------------------


def _kernel_functions(cpu: Any, x: np.ndarray, k: tuple, options: tuple) -> dict:
    """The six kernel calls to time, each writing into a buffer made once."""
    col = cpu.im2col(x, k, *options)
    col_out, x_out = np.empty_like(col), np.empty_like(x)
    return {
        "im2col reference": lambda: reference.im2col(x, k, *options, out=col_out),
        "im2col serial": lambda: cpu.im2col(x, k, *options, out=col_out, parallel=False),
        "im2col parallel": lambda: cpu.im2col(x, k, *options, out=col_out, parallel=True),
        "col2im reference": lambda: reference.col2im(col, x.shape, k, *options, out=x_out),
        "col2im serial": lambda: cpu.col2im(col, x.shape, k, *options, out=x_out, parallel=False),
        "col2im parallel": lambda: cpu.col2im(col, x.shape, k, *options, out=x_out, parallel=True),
    }


def run_kernel_table(
    layer_list: list[Layer], repeats: int, clock_name: str, settle: float = 0.0
) -> list[dict]:
    """im2col and col2im on one batch chunk of each layer: reference, Numba serial, parallel."""
    from tinygen.kernels import cpu

    rows = []
    clock = Clock()
    print(
        f"{'layer':44s} {'chunk':>5s} | {'im2col ref':>10s} {'serial':>7s} {'parallel':>8s} | "
        f"{'col2im ref':>10s} {'serial':>7s} {'parallel':>8s}   (ms, median)"
    )
    for layer in layer_list:
        x_shape, weight_shape = layer.conv2d_geometry()
        options = ((layer.stride,) * 2, (layer.padding,) * 2, (layer.dilation,) * 2)
        info = conv_arrays.plan(x_shape, weight_shape, *options, 1)
        if info["path"] != "im2col":
            continue
        chunk = info["images_per_chunk"]
        x = np.random.default_rng(0).standard_normal((chunk, *x_shape[1:]), dtype=np.float32)
        k = weight_shape[2:]
        functions = _kernel_functions(cpu, x, k, options)
        timings = time_interleaved(functions, repeats, clock, settle)
        med = {name: t[clock_name]["median_ms"] for name, t in timings.items()}
        rows.append(
            {
                "layer": layer.name,
                "images_per_chunk": chunk,
                "column_bytes": info["column_bytes_per_chunk"],
                "timings": timings,
            }
        )
        print(
            f"{layer.name[:44]:44s} {chunk:5d} | {med['im2col reference']:10.3f} "
            f"{med['im2col serial']:7.3f} {med['im2col parallel']:8.3f} | "
            f"{med['col2im reference']:10.3f} {med['col2im serial']:7.3f} "
            f"{med['col2im parallel']:8.3f}",
            flush=True,
        )
    return rows


# ---------------------------------------------------------------------------
# Compile time, environment, main
# ---------------------------------------------------------------------------


def numba_compile_seconds() -> dict:
    """Cold compile (a fresh process, an empty cache folder) and this process's warm-up."""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        program = "from tinygen.kernels import cpu; print(cpu.warmup())"
        env = dict(os.environ, NUMBA_CACHE_DIR=folder)
        done = subprocess.run(
            [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=600
        )
        if done.returncode == 0:
            result["cold_compile_s"] = float(done.stdout.strip().splitlines()[-1])
        else:
            result["cold_compile_error"] = done.stderr.strip()[-500:]
    result["warmup_in_process_s"] = kernels.warmup()
    return result


def environment(torch: Any) -> dict:
    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        **blas_info(),
        "removed_for_this_run": os.environ.get("TINYGEN_BENCH_RESTARTED", ""),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        **kernels.info(),
        "malloc": allocator.STATUS,
        "torch": torch.__version__ if torch is not None else None,
    }
    if torch is not None:
        env["torch_backends"] = {
            "mkldnn": torch.backends.mkldnn.is_available(),
            "capability": torch.backends.cpu.get_cpu_capability(),
        }
    return env


def set_threads(threads: int, torch: Any) -> Any:
    """Limit BLAS, Numba and torch to `threads`; returns the BLAS limit to keep alive."""
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    return threadpool_limits(threads, user_api="blas")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.conv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default="", help="run only layers whose name contains this")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the interleaved reference-kernel runs"
    )
    parser.add_argument("--no-kernels", action="store_true", help="skip the im2col/col2im table")
    parser.add_argument("--no-compile", action="store_true", help="skip the cold-compile timing")
    parser.add_argument(
        "--keep-coretype",
        action="store_true",
        help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE as they are",
    )
    parser.add_argument(
        "--gpu-only", action="store_true", help="skip the CPU tables (on a machine with a GPU)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.02,
        help="seconds of sleep before each timed call with 2+ threads (default 0.02)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    layer_list = [layer for layer in layers() if args.only in layer.name]

    report: dict[str, Any] = {"environment": environment(torch)}
    skip_compile = args.no_compile or args.gpu_only
    report["numba_compile"] = {} if skip_compile else numba_compile_seconds()
    print(json.dumps(report, indent=1, default=str), flush=True)

    report["cpu"] = {}
    for threads in [] if args.gpu_only else args.threads:
        limits = set_threads(threads, torch)
        clock_name = "cpu" if threads == 1 else "wall"
        settle = args.settle if threads > 1 else 0.0
        time.sleep(settle)  # the last table's threads (Numba's, torch's) stop spinning first
        peak = gemm_peak(clock=time.thread_time if clock_name == "cpu" else time.perf_counter)
        print(
            f"\n== CPU, {threads} thread(s): float32 GEMM peak {peak:.1f} GFLOP/s "
            f"(BLAS kernel {blas_info().get('blas_kernel')}); clock: "
            f"{'thread CPU time' if clock_name == 'cpu' else 'wall'}; ratios = tinygen / "
            "torch and tinygen (Numba) / tinygen (reference kernels)"
        )
        print(HEADER)
        # tinygen as its training loop runs it: in lanes, as many as BLAS had threads, BLAS
        # at one thread (tinygen/kernels/lanes.py). Entered once for the whole table: each
        # exit gives OpenBLAS its threads back, and they spin for a while. torch has its own
        # BLAS and threads, which this leaves alone.
        with lanes.threads():
            rows = run_table(
                layer_list,
                args.repeats,
                torch,
                not args.no_reference,
                peak,
                clock_name,
                Clock(),
                settle=settle,
            )
        section: dict[str, Any] = {
            "gemm_peak_gflop_per_s": peak,
            "clock": clock_name,
            "layers": rows,
        }
        if not args.no_kernels:
            print(f"\n-- im2col / col2im alone, {threads} thread(s)")
            section["kernels"] = run_kernel_table(layer_list, args.repeats, clock_name, settle)
        report["cpu"][str(threads)] = section
        limits.unregister()

    cp = cupy_module()
    if cp is not None:
        report["gpu"] = run_gpu(layer_list, args.repeats, torch, cp)
    else:
        report["gpu"] = {"skipped": cupy_unavailable_reason()}
        print(f"\nno GPU table: {cupy_unavailable_reason()}")

    out = args.out or RESULTS / f"conv-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwritten: {out}")
    return report


def run_gpu(layer_list: list[Layer], repeats: int, torch: Any, cp: Any) -> dict:
    """The same table on cupy arrays, the device synchronized before every clock reading."""
    from tinygen.kernels import gpu

    gpu.warmup()
    torch_cuda = torch if torch is not None and torch.cuda.is_available() else None

    def sync():
        cp.cuda.Device().synchronize()
        if torch_cuda is not None:
            torch_cuda.cuda.synchronize()

    a = cp.random.standard_normal((4096, 4096), dtype=cp.float32)
    for _ in range(3):
        a @ a
    sync()
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    sync()
    peak = 10 * 2 * 4096**3 / (time.perf_counter() - start) / 1e9
    print(
        f"\n== GPU {cp.cuda.runtime.getDeviceProperties(0)['name']}: float32 GEMM "
        f"{peak:.0f} GFLOP/s (cupy, 4096^3); clock: wall, synchronized"
    )
    print(HEADER)
    rows = run_table(
        layer_list,
        repeats,
        torch_cuda,
        False,
        peak,
        "wall",
        Clock(sync),
        xp=cp,
        torch_device="cuda",
    )
    return {"gemm_peak_gflop_per_s": peak, "clock": "wall", "layers": rows}


if __name__ == "__main__":
    main()
