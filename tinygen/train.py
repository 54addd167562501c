"""Training runs of the DCGAN and the VAE: the loop, its records, checkpoints, and evaluation.

    from tinygen.train import RunConfig, train
    summary = train(RunConfig(model="vae", dataset="fashion-mnist", epochs=5, out="runs/vae"))

A run writes into its folder `out`:

    metrics.jsonl              one JSON object per training step (losses, D(x), images/s, ...)
    epochs.jsonl               one JSON object per epoch: steps, seconds, images/s, last losses
    samples_epoch_NNN.png      a grid of samples after each epoch, from one fixed noise batch,
                               so the grids of successive epochs compare image by image
    losses.png                 the loss curves so far (redrawn after each epoch)
    checkpoint_epoch_NNN.npz   models, optimizers, step, epoch and the random state
    reconstructions.png        (VAE) test images (odd rows) above their reconstructions
    interpolation.png          (VAE) decoded points on straight lines between two test images'
                               latent means

Resuming (`train(config, resume=True)`) loads the newest checkpoint and continues from the
epoch after it. A checkpoint is written at the end of an epoch and holds the state of
tinygen's random generator at that moment, which is the state at the start of the next
epoch, before the DataLoader draws that epoch's shuffle order. Nothing draws random numbers
between the checkpoint and the next epoch (grids come from the fixed noise, reconstructions
use the posterior mean), so the resumed run draws the same shuffles, noise and epsilons as
an uninterrupted one and ends with the same parameters, bit for bit.

The model code, and the objective of each step, are in tinygen/models/.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import tinygen as tg
from tinygen import backend, checkpoint, kernels, optim, viz
from tinygen.data import DataLoader, load_dataset
from tinygen.kernels import lanes
from tinygen.models import dcgan, vae

MODELS = ("gan", "vae")
# The recipes of the reference models (../shared/DESIGN.md): defaults for what is not given.
DEFAULTS = {
    "gan": {"latent_dim": 64, "width": 64, "lr": 2e-4, "betas": (0.5, 0.999)},
    "vae": {"latent_dim": 16, "width": 32, "lr": 1e-3, "betas": (0.9, 0.999)},
}
GRID_SIZE = 64  # samples in each epoch's grid, 8 x 8
CHECKPOINT_PATTERN = re.compile(r"checkpoint_epoch_(\d+)\.npz$")


@dataclass
class RunConfig:
    """Everything that defines a run. None means the model's reference default."""

    model: str  # 'gan' or 'vae'
    dataset: str = "fashion-mnist"
    epochs: int = 5
    batch_size: int = 64
    seed: int = 0
    out: str = "runs/run"
    device: str = "cpu"
    data_dir: str | None = None
    limit: int | None = None  # use only the first `limit` train (and test) images
    latent_dim: int | None = None
    width: int | None = None
    lr: float | None = None
    kl_weight: float = 1.0  # VAE: weight of the KL term (1 gives the ELBO)
    kl_warmup_steps: int = 0  # VAE: steps over which the KL weight rises linearly from 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"RunConfig: model must be one of {MODELS}, got {self.model!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RunConfig: {name} must be an int >= 1, got {value!r}")
        if self.kl_warmup_steps < 0:
            raise ValueError(
                f"RunConfig: kl_warmup_steps must be >= 0, got {self.kl_warmup_steps}"
            )
        defaults = DEFAULTS[self.model]
        for name in ("latent_dim", "width", "lr"):
            if getattr(self, name) is None:
                setattr(self, name, defaults[name])
        self.device = backend.normalize_device(self.device)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls(**json.loads(text))


# ---------------------------------------------------------------------------
# The two trainers: what is specific to each model
# ---------------------------------------------------------------------------


class GanTrainer:
    """DCGAN-28: G and D, their Adam optimizers, and a fixed noise batch for the grids."""

    value_range = (-1.0, 1.0)  # the generator ends in tanh
    curves = ("loss_d", "loss_g")

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        # Draw order from the seed: G's weights, D's weights, then the fixed noise.
        self.G, self.D = dcgan.build_dcgan(config.latent_dim, config.width)
        self.G.to(config.device)
        self.D.to(config.device)
        betas = DEFAULTS["gan"]["betas"]
        self.opt_g = optim.Adam(self.G.parameters(), lr=config.lr, betas=betas)
        self.opt_d = optim.Adam(self.D.parameters(), lr=config.lr, betas=betas)
        self.fixed_noise = dcgan.sample_noise(GRID_SIZE, config.latent_dim, config.device)

    def modules(self) -> dict[str, Any]:
        return {"generator": self.G, "discriminator": self.D}

    def optimizers(self) -> dict[str, Any]:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def step(self, images: tg.Tensor, step: int) -> dict[str, float]:
        return dcgan.gan_step(self.G, self.D, self.opt_g, self.opt_d, images)

    def postfix(self, stats: dict[str, float]) -> str:
        return (
            f"loss_D {stats['loss_d']:.3f} loss_G {stats['loss_g']:.3f} "
            f"D(x) {stats['d_x']:.2f} D(G(z)) {stats['d_g_z1']:.2f}/{stats['d_g_z2']:.2f}"
        )

    def write_pictures(self, out: Path, epoch: int, test_images: np.ndarray) -> list[Path]:
        with tg.no_grad():
            self.G.eval()
            samples = self.G(self.fixed_noise)  # (64, 1, 28, 28) in [-1, 1]
        path = out / f"samples_epoch_{epoch:03d}.png"
        return [viz.save_grid(samples, path, nrow=8, value_range=self.value_range, scale=2)]


class VaeTrainer:
    """ConvVAE-28, its Adam optimizer, and a fixed latent batch for the grids."""

    value_range = (0.0, 1.0)  # Bernoulli pixel means
    curves = ("loss", "recon", "kl")

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.model = vae.ConvVAE(config.latent_dim, config.width)  # PyTorch's default init
        self.model.to(config.device)
        self.opt = optim.Adam(
            self.model.parameters(), lr=config.lr, betas=DEFAULTS["vae"]["betas"]
        )
        self.fixed_noise = tg.randn(GRID_SIZE, config.latent_dim, device=config.device)

    def modules(self) -> dict[str, Any]:
        return {"vae": self.model}

    def optimizers(self) -> dict[str, Any]:
        return {"opt": self.opt}

    def step(self, images: tg.Tensor, step: int) -> dict[str, float]:
        weight = vae.kl_weight_at(step, self.config.kl_weight, self.config.kl_warmup_steps)
        return vae.vae_step(self.model, self.opt, images, weight)

    def postfix(self, stats: dict[str, float]) -> str:
        return f"-ELBO {stats['loss']:.1f} recon {stats['recon']:.1f} KL {stats['kl']:.2f}"

    def write_pictures(self, out: Path, epoch: int, test_images: np.ndarray) -> list[Path]:
        self.model.eval()
        with tg.no_grad():
            samples = self.model.decode(self.fixed_noise).sigmoid()  # (64, 1, 28, 28)
        paths = [
            viz.save_grid(
                samples,
                out / f"samples_epoch_{epoch:03d}.png",
                nrow=8,
                value_range=(0, 1),
                scale=2,
            )
        ]
        paths += write_vae_figures(self.model, test_images, out)
        return paths


def write_vae_figures(model: vae.ConvVAE, test_images: np.ndarray, out: Path) -> list[Path]:
    """reconstructions.png and interpolation.png from test images (N, 1, 28, 28) in [0, 1].

    Both use the posterior mean mu (no random draw): reconstructions are sigmoid(decode(mu));
    the interpolation decodes (1 - t) mu_a + t mu_b for t in 0, 1/9, ..., 1, one row per pair
    of test images.
    """
    device = next(iter(model.parameters())).device
    model.eval()
    n = min(32, len(test_images))
    x = tg.tensor(test_images[:n]).to(device)  # (n, 1, 28, 28)
    with tg.no_grad():
        mu, _ = model.encode(x)  # (n, L)
        recon = model.decode(mu).sigmoid().numpy()  # (n, 1, 28, 28)
    rows = []
    for start in range(0, n, 8):  # originals, then their reconstructions, 8 per row
        rows += [test_images[start : start + 8], recon[start : start + 8]]
    grid = np.concatenate(rows)  # (2n, 1, 28, 28)
    paths = [viz.save_grid(grid, out / "reconstructions.png", nrow=8, value_range=(0, 1), scale=2)]

    steps = 10
    pairs = min(6, n // 2)
    if pairs:
        mu_np = mu.numpy()  # (n, L)
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]  # (steps, 1)
        lines = [(1 - t) * mu_np[2 * i] + t * mu_np[2 * i + 1] for i in range(pairs)]
        z = tg.tensor(np.concatenate(lines)).to(device)  # (pairs * steps, L)
        with tg.no_grad():
            strip = model.decode(z).sigmoid()  # (pairs * steps, 1, 28, 28)
        paths.append(
            viz.save_grid(
                strip, out / "interpolation.png", nrow=steps, value_range=(0, 1), scale=2
            )
        )
    return paths


def make_trainer(config: RunConfig) -> GanTrainer | VaeTrainer:
    return GanTrainer(config) if config.model == "gan" else VaeTrainer(config)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def train(config: RunConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Train as `config` says, writing the run's files into config.out; return a summary.

    resume=True continues from the newest checkpoint in config.out (starting fresh, with a
    warning, when there is none) up to config.epochs in all. progress=False hides the tqdm
    bar. The summary holds the last step's statistics and, per epoch, the images/s.
    Raises FileNotFoundError (from load_dataset) when the dataset's files are missing.
    """
    from tqdm import tqdm  # imported here: only the loop needs it

    out = Path(config.out)
    data = load_dataset(
        config.dataset,
        "train",
        config.data_dir,
        value_range=make_value_range(config),
        limit=config.limit,
    )
    test = load_dataset(config.dataset, "test", config.data_dir, limit=config.limit)
    out.mkdir(parents=True, exist_ok=True)

    tg.manual_seed(config.seed)
    trainer = make_trainer(config)
    step, start_epoch = 0, 0
    latest = latest_checkpoint(out) if resume else None
    if resume and latest is None:
        warnings.warn(
            f"train: no checkpoint in {out} to resume from; starting fresh", stacklevel=2
        )
    if not resume:
        # Checkpoints of an earlier run in this folder would be mistaken for this run's.
        stale = sorted(out.glob("checkpoint_epoch_*.npz"))
        if stale:
            warnings.warn(
                f"train: removing {len(stale)} checkpoint(s) of an earlier run in {out}",
                stacklevel=2,
            )
            for path in stale:
                path.unlink()
    if latest is not None:
        values = load_run_checkpoint(latest, trainer)
        step, start_epoch = values["step"], values["epoch"]
    metrics_path, epochs_path = out / "metrics.jsonl", out / "epochs.jsonl"
    _truncate_records(metrics_path, "step", step)
    _truncate_records(epochs_path, "epoch", start_epoch)

    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True)
    if config.device == "cpu":
        # load the compiled kernels now, not in the first timed epoch
        kernels.warmup(("float32",), threaded=False)
    throughput = []
    stats: dict[str, float] = {}
    # lanes.threads(): the convolutions share the batch out between the CPU's threads, BLAS
    # at one thread each (tinygen/kernels/lanes.py says why); BLAS's threads come back after.
    with open(metrics_path, "a") as metrics, lanes.threads():
        for epoch in range(start_epoch, config.epochs):
            for module in trainer.modules().values():
                module.train()
            # The bar only counts: the loop iterates the loader itself, because tqdm may call
            # iter() on what it wraps more than once, and each iter() draws a shuffle.
            bar = tqdm(
                total=len(loader),
                desc=f"{config.model} epoch {epoch + 1}/{config.epochs}",
                unit="batch",
                disable=not progress,
                leave=True,
            )
            epoch_start, seen = time.perf_counter(), 0
            for images, _ in loader:  # the shuffle order is drawn here, at iter()
                tic = time.perf_counter()
                x = tg.tensor(images).to(config.device)  # (B, 1, 28, 28)
                stats = trainer.step(x, step)
                seconds = time.perf_counter() - tic
                step += 1
                seen += len(images)
                record = {"step": step, "epoch": epoch + 1, **stats}
                record["images_per_s"] = len(images) / seconds
                metrics.write(json.dumps(record) + "\n")
                if not all(math.isfinite(v) for v in stats.values()):
                    bar.close()
                    raise FloatingPointError(
                        f"train: non-finite loss at step {step} (epoch {epoch + 1}): {stats}"
                    )
                rate = seen / (time.perf_counter() - epoch_start)
                bar.set_postfix_str(f"{rate:.0f} img/s {trainer.postfix(stats)}", refresh=False)
                bar.update(1)
            bar.close()
            metrics.flush()
            elapsed = time.perf_counter() - epoch_start
            summary = {"epoch": epoch + 1, "step": step, "seconds": elapsed}
            summary.update(images_per_s=seen / elapsed, last=stats)
            throughput.append({"epoch": epoch + 1, "images_per_s": seen / elapsed})
            with open(epochs_path, "a") as file:
                file.write(json.dumps(summary) + "\n")
            trainer.write_pictures(out, epoch + 1, test.images)
            save_run_checkpoint(
                out / f"checkpoint_epoch_{epoch + 1:03d}.npz", trainer, epoch + 1, step
            )
            write_loss_curves(metrics_path, out / "losses.png", trainer.curves)
    return {
        "model": config.model,
        "epochs": config.epochs,
        "steps": step,
        "last": stats,
        "throughput": throughput,
        "out": str(out),
    }


def make_value_range(config: RunConfig) -> tuple[float, float]:
    return GanTrainer.value_range if config.model == "gan" else VaeTrainer.value_range


def write_loss_curves(metrics_path: Path, path: Path, names: tuple[str, ...]) -> Path:
    """Plot `names` from a metrics.jsonl file, each averaged over bins of steps (at most 300
    points per curve, so that the trend shows through the step-to-step noise)."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    steps = np.array([r["step"] for r in records], dtype=np.float64)
    k = max(1, math.ceil(len(records) / 300))  # steps per plotted point
    series = {}
    for name in names:
        values = np.array([r.get(name, np.nan) for r in records], dtype=np.float64)
        series[name] = [
            (float(steps[i : i + k].mean()), float(values[i : i + k].mean()))
            for i in range(0, len(values), k)
        ]
    return viz.save_curves(path, series, title=f"training losses (mean over {k} steps)")


def _truncate_records(path: Path, key: str, last: int) -> None:
    """Keep the records with record[key] <= last (a run interrupted after its last checkpoint
    may have written more; the resumed run writes them again)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line and json.loads(line)[key] <= last]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Checkpoints of a run
# ---------------------------------------------------------------------------


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint of the highest epoch in `folder`, or None."""
    found = []
    for path in Path(folder).glob("checkpoint_epoch_*.npz"):
        match = CHECKPOINT_PATTERN.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def save_run_checkpoint(path: Path, trainer: GanTrainer | VaeTrainer, epoch: int, step: int):
    """Models, optimizers, the fixed noise, epoch, step, the config and the random state."""
    return checkpoint.save(
        path,
        **trainer.modules(),
        **trainer.optimizers(),
        fixed_noise=trainer.fixed_noise.numpy(),
        epoch=epoch,
        step=step,
        config=trainer.config.to_json(),
        rng_state=backend.get_rng_state(),  # the state at the start of the next epoch
    )


def load_run_checkpoint(path: Path, trainer: GanTrainer | VaeTrainer) -> dict:
    """Restore a trainer and tinygen's random state from `path`; return its plain values."""
    values = checkpoint.load(path, **trainer.modules(), **trainer.optimizers())
    noise = np.asarray(values["fixed_noise"])
    trainer.fixed_noise = tg.tensor(noise).to(trainer.config.device)
    backend.set_rng_state(values["rng_state"])
    return {"epoch": int(values["epoch"]), "step": int(values["step"])}


def read_config(path: str | os.PathLike) -> RunConfig:
    """The RunConfig stored in a run checkpoint."""
    values = checkpoint.load(path)  # no targets: every entry comes back as it was saved
    if "config" not in values:
        raise ValueError(f"read_config: {path} is not a tinygen training checkpoint (no config)")
    return RunConfig.from_json(str(values["config"]))


def load_trained(path: str | os.PathLike, device: str = "cpu") -> GanTrainer | VaeTrainer:
    """Rebuild the trainer of a checkpoint, with its weights, in eval mode on `device`."""
    config = read_config(path)
    config.device = backend.normalize_device(device)
    state = backend.get_rng_state()
    trainer = make_trainer(config)  # the init draws are overwritten by the checkpoint
    backend.set_rng_state(state)
    checkpoint.load(path, **trainer.modules(), **trainer.optimizers())
    for module in trainer.modules().values():
        module.eval()
    return trainer


# ---------------------------------------------------------------------------
# Sampling and evaluation of a trained model
# ---------------------------------------------------------------------------


def generate(trainer: GanTrainer | VaeTrainer, n: int, batch_size: int = 500) -> np.ndarray:
    """n new images (n, 1, 28, 28) in [0, 1] from the model in eval mode, drawn from
    tinygen's generator (seed it first for a reproducible set)."""
    device = trainer.config.device
    out = []
    with tg.no_grad():
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            if isinstance(trainer, GanTrainer):
                trainer.G.eval()
                z = dcgan.sample_noise(b, trainer.config.latent_dim, device)
                images = (trainer.G(z) + 1.0) * 0.5  # [-1, 1] -> [0, 1]
            else:
                trainer.model.eval()
                z = tg.randn(b, trainer.config.latent_dim, device=device)
                images = trainer.model.decode(z).sigmoid()
            out.append(images.numpy())
    return np.concatenate(out) if out else np.zeros((0, 1, 28, 28), np.float32)


def evaluate_vae(
    path: str | os.PathLike,
    *,
    data_dir: str | None = None,
    seed: int = 0,
    batch_size: int = 500,
    limit: int | None = None,
    device: str = "cpu",
) -> dict:
    """The test-set negative ELBO of a VAE checkpoint in nats per image, and its two parts.

    One draw of z per image (from `seed`), the usual single-sample estimate; the dataset is
    the one the model was trained on, unless data_dir points elsewhere.
    """
    trainer = load_trained(path, device)
    if not isinstance(trainer, VaeTrainer):
        raise ValueError(f"evaluate_vae: {path} holds a {trainer.config.model}, not a vae")
    config = trainer.config
    test = load_dataset(config.dataset, "test", data_dir or config.data_dir, limit=limit)
    tg.manual_seed(seed)
    total = recon = kl = 0.0
    for images, _ in DataLoader(test, batch_size=batch_size):
        x = tg.tensor(images).to(trainer.config.device)
        t, r, k = vae.negative_elbo(trainer.model, x)
        total, recon, kl = total + t, recon + r, kl + k
    n = len(test)
    return {
        "dataset": config.dataset,
        "num_images": n,
        "neg_elbo": total / n,
        "recon": recon / n,
        "kl": kl / n,
    }


def evaluate_gan(
    path: str | os.PathLike,
    *,
    data_dir: str | None = None,
    n: int = 10000,
    seed: int = 0,
    limit: int | None = None,
    device: str = "cpu",
) -> dict:
    """Frechet distance of n generated images to the test set, and class shares (see
    tinygen.metrics for what the numbers mean)."""
    from tinygen import metrics

    trainer = load_trained(path, device)
    if not isinstance(trainer, GanTrainer):
        raise ValueError(f"evaluate_gan: {path} holds a {trainer.config.model}, not a gan")
    config = trainer.config
    tg.manual_seed(seed)
    images = generate(trainer, n)
    result = metrics.evaluate_generated(
        images, config.dataset, data_dir or config.data_dir, limit=limit
    )
    return {"dataset": config.dataset, **result}
