"""Tests for tinygen.train: smoke training, the run's files, bit-exact resume, evaluation, and
the PyTorch twin following tinygen's run step by step."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygen as tg
from tinygen import checkpoint
from tinygen.train import (
    RunConfig,
    evaluate_vae,
    generate,
    latest_checkpoint,
    load_trained,
    read_config,
    train,
)


def tiny(model: str, out: Path, **changes) -> RunConfig:
    """A run of seconds: small widths, 192 shapes images, batch 32."""
    settings = {
        "model": model,
        "dataset": "shapes",
        "epochs": 2,
        "batch_size": 32,
        "seed": 0,
        "out": str(out),
        "limit": 192,
        "latent_dim": 8,
        "width": 8,
    }
    settings.update(changes)
    return RunConfig(**settings)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def checkpoint_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint except the manifest (which names the run folder)."""
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files if not k.startswith("__")}


# ---------------------------------------------------------------------------
# Smoke training
# ---------------------------------------------------------------------------


def test_vae_training_on_shapes_lowers_the_negative_elbo_clearly(tmp_path):
    config = tiny("vae", tmp_path, epochs=4, limit=256, lr=3e-3)
    summary = train(config, progress=False)
    losses = [r["loss"] for r in records(tmp_path)]
    assert len(losses) == summary["steps"] == 4 * 8
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.75 * first, (first, last)
    for name in ("samples_epoch_004.png", "reconstructions.png", "interpolation.png"):
        assert (tmp_path / name).is_file()


def test_gan_training_on_shapes_keeps_finite_losses_and_varied_samples(tmp_path):
    # 36 steps: enough for BatchNorm's running statistics, which the samples use (eval mode),
    # to forget their initial values (0.9^36 = 2%).
    config = tiny("gan", tmp_path, epochs=3, batch_size=16, lr=1e-3)
    train(config, progress=False)
    rows = records(tmp_path)
    assert len(rows) == 3 * 12
    for row in rows:
        for key in ("loss_d", "loss_g", "d_x", "d_g_z1", "d_g_z2", "images_per_s"):
            assert np.isfinite(row[key]), (key, row)
    trainer = load_trained(latest_checkpoint(tmp_path))
    tg.manual_seed(1)
    images = generate(trainer, 16)  # (16, 1, 28, 28) in [0, 1]
    assert images.shape == (16, 1, 28, 28)
    assert images.min() >= 0.0 and images.max() <= 1.0
    # not one image repeated (a constant generator gives 0 up to round-off, ~1e-7)
    assert images.std(axis=0).mean() > 3e-3
    assert (tmp_path / "samples_epoch_003.png").is_file()
    assert (tmp_path / "losses.png").is_file()


def test_the_run_folder_holds_one_checkpoint_per_epoch_with_its_config(tmp_path):
    config = tiny("vae", tmp_path, epochs=2, limit=64)
    train(config, progress=False)
    paths = sorted(tmp_path.glob("checkpoint_epoch_*.npz"))
    assert [p.name for p in paths] == ["checkpoint_epoch_001.npz", "checkpoint_epoch_002.npz"]
    assert latest_checkpoint(tmp_path) == paths[-1]
    assert read_config(paths[-1]) == config
    values = checkpoint.load(paths[0])
    assert values["epoch"] == 1 and values["step"] == 2
    assert [r["epoch"] for r in records(tmp_path)] == [1, 1, 2, 2]


# ---------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_resumed_run_ends_bit_for_bit_where_an_uninterrupted_run_ends(tmp_path, model):
    straight = tiny(model, tmp_path / "straight", epochs=3, limit=96)
    train(straight, progress=False)

    halves = dataclasses.replace(straight, out=str(tmp_path / "resumed"), epochs=1)
    train(halves, progress=False)
    # Simulate a crash in epoch 2: a metrics line beyond the checkpoint, to be rewritten.
    with open(tmp_path / "resumed" / "metrics.jsonl", "a") as file:
        file.write(json.dumps({"step": 4, "epoch": 2, "loss": -1.0}) + "\n")
    train(dataclasses.replace(halves, epochs=3), resume=True, progress=False)

    a = checkpoint_arrays(tmp_path / "straight" / "checkpoint_epoch_003.npz")
    b = checkpoint_arrays(tmp_path / "resumed" / "checkpoint_epoch_003.npz")
    assert a.keys() == b.keys()
    for key in a:  # parameters, BatchNorm buffers, Adam moments, fixed noise
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    va = checkpoint.load(tmp_path / "straight" / "checkpoint_epoch_003.npz")
    vb = checkpoint.load(tmp_path / "resumed" / "checkpoint_epoch_003.npz")
    assert va["rng_state"] == vb["rng_state"] and va["step"] == vb["step"]

    def losses(rows):  # each step's record, without its timing
        return [{k: v for k, v in row.items() if k != "images_per_s"} for row in rows]

    assert losses(records(tmp_path / "straight")) == losses(records(tmp_path / "resumed"))


def test_resume_without_a_checkpoint_warns_and_starts_fresh(tmp_path):
    with pytest.warns(UserWarning, match="no checkpoint"):
        train(tiny("vae", tmp_path, epochs=1, limit=32), resume=True, progress=False)
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch_001.npz"


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def test_evaluate_vae_reports_nats_per_image_as_recon_plus_kl(tmp_path):
    train(tiny("vae", tmp_path, epochs=1, limit=64), progress=False)
    result = evaluate_vae(latest_checkpoint(tmp_path), limit=64)
    assert result["num_images"] == 64
    assert result["neg_elbo"] == pytest.approx(result["recon"] + result["kl"])
    assert 0 < result["neg_elbo"] < 784 * np.log(2) * 1.5  # nats, near a coin per pixel at most
    again = evaluate_vae(latest_checkpoint(tmp_path), limit=64)
    assert again == result  # seeded: the same estimate twice


def test_run_config_rejects_bad_values():
    with pytest.raises(ValueError, match="model must be one of"):
        RunConfig(model="flow")
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        RunConfig(model="gan", epochs=0)
    assert RunConfig(model="vae").latent_dim == 16
    assert RunConfig(model="gan").lr == 2e-4


# ---------------------------------------------------------------------------
# The PyTorch twin draws what tinygen draws, and computes what tinygen computes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_torch_twin_follows_the_tinygen_run_over_its_first_steps(tmp_path, model):
    """Same init, batches and noise: the first epoch's losses agree to float32 round-off
    (growing slowly with the steps, as two float32 computations drift apart)."""
    torch = pytest.importorskip("torch", reason="the twin parity test needs PyTorch")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
    from benchmarks.torch_twin import TorchRun

    config = tiny(model, tmp_path, epochs=1, limit=96)
    train(config, progress=False)
    ours = records(tmp_path)
    torch.set_num_threads(1)
    twin = TorchRun(config)
    tg.set_rng_state(twin._rng)
    theirs = []
    for images, _ in twin.loader:
        x = torch.from_numpy(images)
        theirs.append(twin.gan_step(x) if model == "gan" else twin.vae_step(x))
    keys = ("loss_d", "loss_g", "d_x") if model == "gan" else ("loss", "recon", "kl")
    assert len(theirs) == len(ours) == 3
    for a, b in zip(ours, theirs):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=2e-4, abs=1e-5), (key, a, b)
