"""Tests for the `tinygen` command: train, sample, eval and info end to end on tiny settings,
and the one-message exit 2 for a missing dataset or checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygen.cli import main
from tinygen.data import datasets

TINY = ["--dataset", "shapes", "--limit", "64", "--batch-size", "32", "--epochs", "1"]
TINY += ["--latent-dim", "4", "--width", "4", "--no-progress"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    assert main(["train", "vae", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gan")
    assert main(["train", "gan", *TINY, "--out", str(out)]) == 0
    return out


def test_train_writes_metrics_grids_curves_and_a_checkpoint(vae_run, capsys):
    for name in (
        "metrics.jsonl",
        "epochs.jsonl",
        "samples_epoch_001.png",
        "losses.png",
        "checkpoint_epoch_001.npz",
        "reconstructions.png",
        "interpolation.png",
    ):
        assert (vae_run / name).is_file(), name
    rows = [json.loads(line) for line in (vae_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"loss", "recon", "kl", "images_per_s"} <= set(rows[0])


def test_train_gan_logs_d_of_x_and_d_of_g_of_z(gan_run):
    row = json.loads((gan_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss_d", "loss_g", "d_x", "d_g_z1", "d_g_z2"} <= set(row)


def test_train_resume_continues_to_the_asked_epoch(tmp_path):
    out = str(tmp_path)
    assert main(["train", "vae", *TINY, "--out", out]) == 0
    args = ["train", "vae", *TINY, "--out", out, "--resume"]
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 0
    assert (tmp_path / "checkpoint_epoch_002.npz").is_file()
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4]


@pytest.mark.parametrize("fixture", ["vae_run", "gan_run"])
def test_sample_writes_a_png_grid_or_an_npy_in_the_unit_interval(fixture, tmp_path, request):
    run = request.getfixturevalue(fixture)
    checkpoint = str(run / "checkpoint_epoch_001.npz")
    assert main(["sample", checkpoint, "--n", "10", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["sample", checkpoint, "--n", "10", "--out", str(tmp_path / "s.npy")]) == 0
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (10, 1, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_eval_vae_prints_the_negative_elbo_in_nats_with_its_parts(vae_run, capsys):
    checkpoint = str(vae_run / "checkpoint_epoch_001.npz")
    assert main(["eval", "vae", checkpoint, "--limit", "64"]) == 0
    text = capsys.readouterr().out
    assert "negative ELBO" in text and "nats/image" in text and "KL" in text
    assert main(["eval", "vae", checkpoint, "--limit", "64", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["neg_elbo"] == pytest.approx(result["recon"] + result["kl"])


def test_eval_gan_prints_the_frechet_distance_and_class_shares(gan_run, capsys, monkeypatch):
    monkeypatch.setenv("TINYGEN_CACHE", str(gan_run / "cache"))
    checkpoint = str(gan_run / "checkpoint_epoch_001.npz")
    assert main(["eval", "gan", checkpoint, "--limit", "64", "--n", "64", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert np.isfinite(result["frechet_distance"]) and result["frechet_distance"] >= 0
    assert sum(result["class_shares"].values()) == pytest.approx(1.0)
    assert main(["eval", "gan", checkpoint, "--limit", "64", "--n", "64"]) == 0
    assert "Frechet distance" in capsys.readouterr().out


def test_eval_of_the_wrong_model_exits_2_with_a_message(vae_run, capsys):
    assert main(["eval", "gan", str(vae_run / "checkpoint_epoch_001.npz")]) == 2
    assert "holds a vae, not a gan" in capsys.readouterr().err


def test_missing_checkpoint_and_bad_output_name_exit_2(vae_run, tmp_path, capsys):
    assert main(["sample", str(tmp_path / "none.npz"), "--out", str(tmp_path / "a.png")]) == 2
    assert "not found" in capsys.readouterr().err
    checkpoint = str(vae_run / "checkpoint_epoch_001.npz")
    assert main(["sample", checkpoint, "--out", str(tmp_path / "a.jpg")]) == 2
    assert ".png or .npy" in capsys.readouterr().err


def test_missing_fashion_mnist_says_where_it_looked_and_how_to_install(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    code = main(["train", "gan", "--data-dir", str(tmp_path / "mine"), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "mine") in err and str(tmp_path / "system") in err
    assert "apt-get install dataset-fashion-mnist" in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("checkpoint*"))


def test_missing_dataset_from_the_shell_exits_2_without_a_traceback(tmp_path):
    command = [sys.executable, "-m", "tinygen.cli", "train", "vae", "--dataset", "mnist"]
    command += ["--data-dir", str(tmp_path), "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert str(tmp_path) in done.stderr and "--data-dir" in done.stderr


def test_info_prints_versions_and_kernels(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "numpy" in text and "python" in text


def test_demo_runs_end_to_end_and_names_its_pictures(tmp_path, capsys):
    from tinygen import demo

    demo.main(["--out", str(tmp_path), "--dataset", "shapes", "--limit", "64", "--epochs", "1"])
    text = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    for picture in summary["pictures"].values():
        assert Path(picture).is_file()
        assert picture in text
    assert "nats/image" in text


def test_demo_falls_back_to_digits_without_fashion_mnist(tmp_path, monkeypatch):
    from tinygen import demo

    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    assert demo.choose_dataset(None) == "digits"
    assert demo.choose_dataset(str(tmp_path)) == "digits"
