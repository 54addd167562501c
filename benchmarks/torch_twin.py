"""The PyTorch twin of tinygen's two recipes: the yardstick for speed and for results.

    python -m benchmarks.torch_twin vae --epochs 5 --out runs/twin_vae            # both engines
    python -m benchmarks.torch_twin gan --epochs 5 --engines torch --out runs/twin_gan
    OMP_NUM_THREADS=1 python -m benchmarks.torch_twin gan --threads 1 --time-steps 30

It trains the same model with the same recipe in both engines, their epochs alternating so
that a change of load on the machine hits both: tinygen's epoch k runs as the command a user
types, `tinygen train MODEL ... --epochs k --resume`, in a fresh process; the torch twin runs
in this process. It reports images/s per epoch, then evaluates: the VAE's test-set negative
ELBO (nats per image), the GAN's Frechet distance and class shares (tinygen.metrics, one
classifier for both engines, so the figures compare). Results go to OUT/results.json,
rewritten after every epoch.

What makes the twin a twin:

- architecture: the torch modules below mirror tinygen/models/ layer for layer, with the
  same state_dict keys;
- initialization: tinygen builds its models from the seed exactly as `tinygen train` does,
  and the torch modules start from a copy of those weights (so "same init" is literal);
- data order and noise: the twin draws the shuffle of every epoch, every z of the GAN and
  every epsilon of the VAE from tinygen's seeded generator, in the order tinygen's run draws
  them, so both engines see the same batches and the same noise;
- optimizer and batch: Adam with the same learning rate and betas, batch 64 by default,
  the last partial batch kept, as tinygen's DataLoader does.

The two runs then differ only by floating-point round-off (different summation orders in
the convolutions), which chaotic GAN training amplifies but VAE training does not.
Threads: --threads sets torch's intra-op threads; tinygen's processes use OpenBLAS's default
(the machine's cores) unless OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as tF

import tinygen as tg
from tinygen import metrics, viz
from tinygen.data import DataLoader, load_dataset
from tinygen.kernels import lanes
from tinygen.models.vae import LOGVAR_MAX, LOGVAR_MIN
from tinygen.train import RunConfig, evaluate_gan, evaluate_vae, make_trainer

ENGINES = ("tinygen", "torch")

# ---------------------------------------------------------------------------
# The torch models: the same layers and state_dict keys as tinygen/models/
# ---------------------------------------------------------------------------


class TorchGenerator(tnn.Module):
    def __init__(self, latent_dim: int = 64, width: int = 64) -> None:
        super().__init__()
        self.net = tnn.Sequential(
            tnn.ConvTranspose2d(latent_dim, 2 * width, 7, 1, 0, bias=False),
            tnn.BatchNorm2d(2 * width),
            tnn.ReLU(),  # (N, 128, 7, 7)
            tnn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            tnn.BatchNorm2d(width),
            tnn.ReLU(),  # (N, 64, 14, 14)
            tnn.ConvTranspose2d(width, 1, 4, 2, 1, bias=False),
            tnn.Tanh(),  # (N, 1, 28, 28)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class TorchDiscriminator(tnn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = tnn.Sequential(
            tnn.Conv2d(1, width, 4, 2, 1, bias=False),
            tnn.LeakyReLU(0.2),  # (N, 64, 14, 14)
            tnn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),
            tnn.BatchNorm2d(2 * width),
            tnn.LeakyReLU(0.2),  # (N, 128, 7, 7)
            tnn.Conv2d(2 * width, 1, 7, 1, 0, bias=False),  # (N, 1, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])  # (N,)


class TorchVAE(tnn.Module):
    def __init__(self, latent_dim: int = 16, width: int = 32) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.hidden_shape = (2 * width, 7, 7)
        hidden = 2 * width * 49
        self.encoder = tnn.Sequential(
            tnn.Conv2d(1, width, 4, 2, 1),
            tnn.ReLU(),
            tnn.Conv2d(width, 2 * width, 4, 2, 1),
            tnn.ReLU(),
            tnn.Flatten(),
            tnn.Linear(hidden, 2 * latent_dim),
        )
        self.decoder_input = tnn.Sequential(tnn.Linear(latent_dim, hidden), tnn.ReLU())
        self.decoder = tnn.Sequential(
            tnn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            tnn.ReLU(),
            tnn.ConvTranspose2d(width, 1, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        L = self.latent_dim
        return h[:, :L], h[:, L:].clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.decoder_input(z).reshape(z.shape[0], *self.hidden_shape))


def copy_weights(source: tg.nn.Module, target: tnn.Module) -> None:
    """Copy a tinygen module's state_dict into the torch module with the same keys."""
    state = {k: torch.from_numpy(np.array(v.numpy())) for k, v in source.state_dict().items()}
    target.load_state_dict(state, strict=True)


def noise(*shape: int) -> torch.Tensor:
    """N(0, I) drawn from tinygen's generator (the same draw tinygen's run makes)."""
    return torch.from_numpy(tg.randn(*shape).numpy())


# ---------------------------------------------------------------------------
# The torch training runs
# ---------------------------------------------------------------------------


def vae_loss(logits, x, mu, logvar):
    N = x.shape[0]
    recon = tF.binary_cross_entropy_with_logits(logits, x, reduction="none").reshape(N, -1)
    recon = recon.sum(dim=1).mean()  # sum over pixels, mean over the batch
    kl = (-0.5 * (1 + logvar - mu * mu - logvar.exp())).sum(dim=1).mean()
    return recon + kl, recon, kl


class TorchRun:
    """The torch twin of one tinygen run, trained an epoch at a time.

    Its draws come from tinygen's generator in the order tinygen's run makes them. The
    generator's state is kept here between epochs (`_rng`), so the twin's epochs can be
    interleaved with tinygen's, which keep their own state in their checkpoints.
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        tg.manual_seed(config.seed)
        reference = make_trainer(config)  # the same init draws and fixed-noise draw as tinygen
        self.fixed = torch.from_numpy(reference.fixed_noise.numpy())
        value_range = (-1.0, 1.0) if config.model == "gan" else (0.0, 1.0)
        data = load_dataset(
            config.dataset, "train", config.data_dir, value_range=value_range, limit=config.limit
        )
        self.loader = DataLoader(data, batch_size=config.batch_size, shuffle=True)
        if config.model == "gan":
            self.G = TorchGenerator(config.latent_dim, config.width)
            self.D = TorchDiscriminator(config.width)
            copy_weights(reference.G, self.G)
            copy_weights(reference.D, self.D)
            self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=(0.5, 0.999))
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=(0.5, 0.999))
            self.models = (self.G, self.D)
        else:
            self.model = TorchVAE(config.latent_dim, config.width)
            copy_weights(reference.model, self.model)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr)
            self.models = (self.model,)
        self._rng = tg.get_rng_state()
        self.throughput: list[dict] = []
        self.last: dict = {}

    def run_epoch(self) -> float:
        """Train one epoch; return its images/s."""
        tg.set_rng_state(self._rng)
        for m in self.models:
            m.train()
        start, seen = time.perf_counter(), 0
        for images, _ in self.loader:  # the shuffle is drawn here, from tinygen's generator
            x = torch.from_numpy(images)
            self.last = self.gan_step(x) if self.config.model == "gan" else self.vae_step(x)
            seen += x.shape[0]
        rate = seen / (time.perf_counter() - start)
        self._rng = tg.get_rng_state()
        self.throughput.append({"epoch": len(self.throughput) + 1, "images_per_s": rate})
        return rate

    def gan_step(self, x: torch.Tensor) -> dict:
        G, D = self.G, self.D
        z = noise(x.shape[0], self.config.latent_dim, 1, 1)
        fake = G(z)
        self.opt_d.zero_grad()
        out_real, out_fake = D(x), D(fake.detach())  # two passes, fake detached
        loss_d = tF.binary_cross_entropy_with_logits(
            out_real, torch.ones_like(out_real)
        ) + tF.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake))
        loss_d.backward()
        self.opt_d.step()
        self.opt_g.zero_grad()
        out_g = D(fake)
        loss_g = tF.binary_cross_entropy_with_logits(out_g, torch.ones_like(out_g))
        loss_g.backward()
        self.opt_g.step()
        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "d_x": torch.sigmoid(out_real).mean().item(),
            "d_g_z1": torch.sigmoid(out_fake).mean().item(),
        }

    def vae_step(self, x: torch.Tensor) -> dict:
        self.opt.zero_grad()
        mu, logvar = self.model.encode(x)
        z = mu + (0.5 * logvar).exp() * noise(x.shape[0], self.config.latent_dim)
        loss, recon, kl = vae_loss(self.model.decode(z), x, mu, logvar)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

    def save_grid(self, path: Path) -> Path:
        """The grid of the fixed noise batch, drawn in eval mode as tinygen draws its own."""
        with torch.no_grad():
            for m in self.models:
                m.eval()
            if self.config.model == "gan":
                grid, value_range = self.G(self.fixed).numpy(), (-1, 1)
            else:
                grid, value_range = torch.sigmoid(self.model.decode(self.fixed)).numpy(), (0, 1)
        return viz.save_grid(grid, path, nrow=8, value_range=value_range, scale=2)

    def evaluate(self) -> dict:
        """Evaluate as tinygen evaluates; the training stream of random numbers is untouched
        (it is kept in self._rng)."""
        if self.config.model == "gan":
            return evaluate_torch_gan(self.G, self.config)
        return evaluate_torch_vae(self.model, self.config)


def evaluate_torch_vae(model: TorchVAE, config: RunConfig, seed: int = 0) -> dict:
    """The same estimator as `tinygen eval vae`: one z per test image, eps from `seed`."""
    test = load_dataset(config.dataset, "test", config.data_dir, limit=config.limit)
    tg.manual_seed(seed)
    total = recon_total = kl_total = 0.0
    model.eval()
    with torch.no_grad():
        for images, _ in DataLoader(test, batch_size=500):
            x = torch.from_numpy(images)
            mu, logvar = model.encode(x)
            z = mu + (0.5 * logvar).exp() * noise(*mu.shape)
            _, recon, kl = vae_loss(model.decode(z), x, mu, logvar)
            recon_total += recon.item() * len(x)
            kl_total += kl.item() * len(x)
    n = len(test)
    total = recon_total + kl_total
    return {"neg_elbo": total / n, "recon": recon_total / n, "kl": kl_total / n}


def evaluate_torch_gan(G: TorchGenerator, config: RunConfig, n: int = 10000, seed: int = 0):
    """The same evaluation as `tinygen eval gan`: n samples in eval mode, z from `seed`."""
    tg.manual_seed(seed)
    G.eval()
    batches = []
    with torch.no_grad():
        for start in range(0, n, 500):
            z = noise(min(500, n - start), config.latent_dim, 1, 1)
            batches.append(((G(z) + 1) * 0.5).numpy())
    result = metrics.evaluate_generated(
        np.concatenate(batches), config.dataset, config.data_dir, limit=config.limit
    )
    return result


# ---------------------------------------------------------------------------
# The tinygen run, through the same code as `tinygen train` and `tinygen eval`
# ---------------------------------------------------------------------------


def train_tinygen_epoch(config: RunConfig, epoch: int) -> float:
    """Train tinygen's run up to `epoch` with the `tinygen train` command (resuming from its
    checkpoint after the first epoch) in a fresh process, so that its threads and torch's do
    not share a process; return the epoch's images/s from the run's epochs.jsonl."""
    command = [sys.executable, "-m", "tinygen.cli", "train", config.model]
    command += ["--dataset", config.dataset, "--epochs", str(epoch), "--seed", str(config.seed)]
    command += ["--batch-size", str(config.batch_size), "--out", config.out, "--no-progress"]
    if config.limit is not None:
        command += ["--limit", str(config.limit)]
    if config.data_dir is not None:
        command += ["--data-dir", config.data_dir]
    if epoch > 1:
        command.append("--resume")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    lines = (Path(config.out) / "epochs.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    if last["epoch"] != epoch:
        raise RuntimeError(f"tinygen run ended at epoch {last['epoch']}, expected {epoch}")
    return last["images_per_s"]


def evaluate_tinygen(config: RunConfig) -> dict:
    path = Path(config.out) / f"checkpoint_epoch_{config.epochs:03d}.npz"
    if config.model == "vae":
        return evaluate_vae(path, limit=config.limit)
    return evaluate_gan(path, limit=config.limit)


def time_steps(config: RunConfig, steps: int) -> dict:
    """CPU seconds and wall seconds per training step of both engines, interleaved step by
    step on the same batches (the first 3 steps of each are warm-up and not counted).

    CPU time (time.process_time, all threads of this process) is what to compare on a shared
    machine: other processes' load changes wall-clock time, not the CPU time a step needs.
    With more than one thread it also counts threads that spin while they wait.
    """
    tg.manual_seed(config.seed)
    ours = make_trainer(config)
    twin = TorchRun(config)
    value_range = (-1.0, 1.0) if config.model == "gan" else (0.0, 1.0)
    data = load_dataset(config.dataset, "train", config.data_dir, value_range=value_range)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True)
    for m in ours.modules().values():
        m.train()
    for m in twin.models:
        m.train()
    clocks = {e: {"cpu": [], "wall": []} for e in ENGINES}
    # tinygen in lanes as its training loop runs it (BLAS at one thread; torch has its own)
    with lanes.threads():
        for i, (images, _) in enumerate(loader):
            if i == steps + 3:
                break
            for engine in ENGINES:
                cpu, wall = time.process_time(), time.perf_counter()
                if engine == "tinygen":
                    ours.step(tg.tensor(images), i)
                elif config.model == "gan":
                    twin.gan_step(torch.from_numpy(images))
                else:
                    twin.vae_step(torch.from_numpy(images))
                if i >= 3:
                    clocks[engine]["cpu"].append(time.process_time() - cpu)
                    clocks[engine]["wall"].append(time.perf_counter() - wall)
    result = {}
    for engine, clock in clocks.items():
        cpu, wall = float(np.median(clock["cpu"])), float(np.median(clock["wall"]))
        result[engine] = {
            "cpu_s_per_step": cpu,
            "wall_s_per_step": wall,
            "images_per_cpu_s": config.batch_size / cpu,
            "images_per_s": config.batch_size / wall,
        }
    result["torch/tinygen cpu"] = result["tinygen"]["cpu_s_per_step"] / max(
        result["torch"]["cpu_s_per_step"], 1e-12
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=("gan", "vae"))
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--engines", default="tinygen,torch", help="tinygen, torch, or both")
    parser.add_argument("--out", default=None, help="folder (default runs/twin_<model>)")
    parser.add_argument(
        "--eval-every-epoch", action="store_true", help="evaluate both after every epoch"
    )
    parser.add_argument(
        "--time-steps",
        type=int,
        default=0,
        help="instead of training: time N steps of each engine, interleaved (CPU and wall)",
    )
    args = parser.parse_args(argv)
    if args.time_steps:
        torch.set_num_threads(args.threads)
        config = RunConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir)
        config.batch_size = args.batch_size
        print(json.dumps(time_steps(config, args.time_steps), indent=2))
        return
    engines = args.engines.split(",")
    if not set(engines) <= set(ENGINES):
        raise SystemExit(f"--engines: expected tinygen and/or torch, got {args.engines!r}")

    torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/twin_{args.model}")
    out.mkdir(parents=True, exist_ok=True)
    config = RunConfig(
        model=args.model,
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        out=str(out / "tinygen"),
        data_dir=args.data_dir,
        limit=args.limit,
    )
    results: dict = {"config": json.loads(config.to_json()), "torch_threads": args.threads}
    twin = TorchRun(config) if "torch" in engines else None
    results["epochs"] = []
    # Epochs alternate between the engines, so a change of load on the machine hits both.
    for epoch in range(1, config.epochs + 1):
        row: dict = {"epoch": epoch}
        if "tinygen" in engines:
            row["tinygen_images_per_s"] = train_tinygen_epoch(config, epoch)
        if twin is not None:
            row["torch_images_per_s"] = twin.run_epoch()
        print(f"epoch {epoch}: " + _rates(row), flush=True)
        if args.eval_every_epoch or epoch == config.epochs:
            if "tinygen" in engines:
                row["tinygen"] = evaluate_tinygen(dataclasses.replace(config, epochs=epoch))
                row["tinygen"]["grid"] = str(Path(config.out) / f"samples_epoch_{epoch:03d}.png")
            if twin is not None:
                row["torch"] = twin.evaluate()
                row["torch"]["grid"] = str(twin.save_grid(out / f"torch_epoch_{epoch:03d}.png"))
            print(f"epoch {epoch}: " + _figures(row, args.model), flush=True)
        results["epochs"].append(row)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results in {out / 'results.json'}")


def _rates(row: dict) -> str:
    parts = [
        f"{e} {row[e + '_images_per_s']:.0f} images/s"
        for e in ENGINES
        if e + "_images_per_s" in row
    ]
    if len(parts) == 2:
        parts.append(
            f"torch/tinygen {row['torch_images_per_s'] / row['tinygen_images_per_s']:.2f}x"
        )
    return ", ".join(parts)


def _figures(row: dict, model: str) -> str:
    key = "neg_elbo" if model == "vae" else "frechet_distance"
    parts = [f"{e} {key} {row[e][key]:.3f}" for e in ENGINES if e in row]
    if len(parts) == 2:
        a, b = row["tinygen"][key], row["torch"][key]
        parts.append(f"relative difference {(a - b) / b:+.2%}")
    return ", ".join(parts)


if __name__ == "__main__":
    main()
