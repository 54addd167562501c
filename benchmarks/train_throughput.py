"""Training throughput of DCGAN-28 and ConvVAE-28: images per second, tinygen beside torch.

    python -m benchmarks.train_throughput                         # on the CPU, 2 threads
    python -m benchmarks.train_throughput --device cuda           # on a GPU (cupy + torch CUDA)

Each engine runs the reference recipe (batch 64, Adam) on random images for a few warm-up
steps, then `--steps` timed steps; on a GPU the device is synchronized before each clock
reading, so the time covers the work and not only its launch. Prints a table and writes JSON
(--out).

The two engines alternate blocks of steps, and the ratio is taken block pair by block pair
(tinygen's block i against torch's block i, run one after the other), then the median of
those ratios is reported with its range. On a shared virtual machine the speed of the whole
machine drifts: seen here, a tinygen GAN step took 92 ms for a minute and 130 ms the next,
with nothing else running in the guest. The ratio of two blocks a second apart is hardly
touched by such drifts; the ratio of two whole epochs run one after the other is.
Between blocks the process sleeps `--settle` seconds, so that the threads of one engine's
thread pool have stopped spinning before the other engine is timed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import tinygen as tg
from tinygen import allocator, backend, optim
from tinygen.kernels import lanes
from tinygen.models import dcgan, vae


def _sync(device: str, torch: Any) -> None:
    if device == "cuda":
        backend.cupy_module().cuda.Device().synchronize()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()


def tinygen_steps(model: str, device: str, batch: int) -> Any:
    """A function running n training steps of tinygen's recipe on one fixed batch."""
    tg.manual_seed(0)
    images = np.random.default_rng(0).random((batch, 1, 28, 28)).astype(np.float32)
    if model == "gan":
        G, D = dcgan.build_dcgan()
        G.to(device), D.to(device)
        opt_g = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        real = tg.tensor(images * 2 - 1).to(device)

        def step() -> None:
            dcgan.gan_step(G, D, opt_g, opt_d, real)

    else:
        net = vae.ConvVAE().to(device)
        opt = optim.Adam(net.parameters(), lr=1e-3)
        x = tg.tensor(images).to(device)

        def step() -> None:
            vae.vae_step(net, opt, x)

    def run(n: int) -> None:
        with lanes.threads():  # as tinygen's training loop runs (tinygen/train.py)
            for _ in range(n):
                step()

    return run


def torch_steps(model: str, device: str, batch: int, torch: Any) -> Any:
    """The same recipe in PyTorch (the twin's modules), on the same device."""
    from benchmarks.torch_twin import TorchDiscriminator, TorchGenerator, TorchVAE

    F = torch.nn.functional
    torch.manual_seed(0)
    images = torch.rand(batch, 1, 28, 28, device=device)
    if model == "gan":
        G, D = TorchGenerator().to(device), TorchDiscriminator().to(device)
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        real = images * 2 - 1
        ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)

        def step() -> None:
            fake = G(torch.randn(batch, 64, 1, 1, device=device))
            opt_d.zero_grad()
            loss_d = F.binary_cross_entropy_with_logits(
                D(real), ones
            ) + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)
            loss_d.backward()
            opt_d.step()
            opt_g.zero_grad()
            F.binary_cross_entropy_with_logits(D(fake), ones).backward()
            opt_g.step()
            loss_d.item()  # as tinygen's step, read a loss back each step

        return lambda n: [step() for _ in range(n)]
    net = TorchVAE().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def vae_step() -> None:
        opt.zero_grad()
        mu, logvar = net.encode(images)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        logits = net.decode(z)
        recon = F.binary_cross_entropy_with_logits(logits, images, reduction="sum") / batch
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum() / batch
        (recon + kl).backward()
        opt.step()
        (recon + kl).item()

    return lambda n: [vae_step() for _ in range(n)]


def measure(run: Any, steps: int, device: str, torch: Any) -> float:
    _sync(device, torch)
    start = time.perf_counter()
    run(steps)
    _sync(device, torch)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=3, help="alternating timed blocks")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="BLAS and torch threads")
    parser.add_argument(
        "--settle", type=float, default=0.2, help="seconds of sleep between blocks"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        torch = None
    if args.device == "cuda" and torch is not None and not torch.cuda.is_available():
        torch = None

    from threadpoolctl import threadpool_limits

    if torch is not None:
        torch.set_num_threads(args.threads)
    limits = threadpool_limits(args.threads, user_api="blas")
    report: dict[str, Any] = {"device": args.device, "batch": args.batch, "models": {}}
    report["threads"] = args.threads
    report["malloc"] = allocator.STATUS  # both engines run in this process, on this malloc
    print(
        f"training throughput on {args.device}, batch {args.batch}, {args.threads} thread(s), "
        f"images/s (median of {args.blocks} blocks of {args.steps} steps)"
    )
    print(f"malloc: {allocator.STATUS}")
    for model in ("gan", "vae"):
        engines = {"tinygen": tinygen_steps(model, args.device, args.batch)}
        if torch is not None:
            engines["torch"] = torch_steps(model, args.device, args.batch, torch)
        for run in engines.values():
            run(3)  # warm-up: compile kernels, fill allocator caches
        seconds: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.blocks):
            for name, run in engines.items():
                time.sleep(args.settle)
                seconds[name].append(measure(run, args.steps, args.device, torch))
        rates = {
            name: args.steps * args.batch / float(np.median(values))
            for name, values in seconds.items()
        }
        row: dict[str, Any] = {"images_per_s": rates, "block_seconds": seconds}
        text = ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
        if "torch" in rates:
            pairs = np.asarray(seconds["tinygen"]) / np.asarray(seconds["torch"])
            row["tinygen_over_torch_time"] = float(np.median(pairs))
            row["ratio_range"] = [float(pairs.min()), float(pairs.max())]
            text += (
                f"  (time ratio tinygen/torch {np.median(pairs):.2f}, "
                f"blocks {pairs.min():.2f}-{pairs.max():.2f})"
            )
        report["models"][model] = row
        print(f"  {model}: {text}", flush=True)
    limits.unregister()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
