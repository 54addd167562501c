"""`make demo`: train tinygen's DCGAN and VAE briefly and write their pictures to a folder.

    python -m tinygen.demo --out runs/demo

On Fashion-MNIST when it is installed (/usr/share/datasets/fashion-mnist, the Debian package
dataset-fashion-mnist), otherwise on scikit-learn's digits, which need no download. The
budget is a few minutes on two CPU cores in all (about 3 on a quiet machine): one epoch of
Fashion-MNIST each, 938 batches of 64 images, which is about what the GAN needs to draw
recognizable garments (fewer steps give grey blobs); or 20 epochs of the digits. The
folder then holds, for each model, what `tinygen train` writes (sample grids per epoch,
loss curves, metrics, checkpoints) and, for the VAE, reconstructions and a latent
interpolation strip; the paths are printed at the end, with the VAE's test-set negative
ELBO. For full runs use the `tinygen` command (`tinygen train gan --epochs 5 ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tinygen.data import FASHION_MNIST_SYSTEM_DIR, load_dataset
from tinygen.train import RunConfig, evaluate_vae, latest_checkpoint, train

# (dataset, limit, GAN epochs, VAE epochs) for each source of images
PLANS = {
    "fashion-mnist": ("fashion-mnist", None, 1, 1),  # 938 steps each
    "digits": ("digits", None, 20, 20),  # 1,442 images: 460 steps each
}


def choose_dataset(data_dir: str | None) -> str:
    """fashion-mnist when its files are found (in data_dir or the system folder), else digits."""
    try:
        load_dataset("fashion-mnist", "train", data_dir, limit=1)
    except FileNotFoundError:
        return "digits"
    return "fashion-mnist"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo", help="folder for the results")
    parser.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's IDX files")
    parser.add_argument(
        "--dataset", default=None, help="override the choice (fashion-mnist, digits, shapes)"
    )
    parser.add_argument("--limit", type=int, default=None, help="override the image count")
    parser.add_argument("--epochs", type=int, default=None, help="override both epoch counts")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)

    name = args.dataset or choose_dataset(args.data_dir)
    dataset, limit, gan_epochs, vae_epochs = PLANS.get(name, (name, None, 1, 1))
    limit = args.limit if args.limit is not None else limit
    if args.epochs is not None:
        gan_epochs = vae_epochs = args.epochs
    out = Path(args.out)
    print(f"tinygen demo: training on {dataset}" + (f" (first {limit} images)" if limit else ""))
    if dataset == "digits" and args.dataset is None:
        print(
            f"  (Fashion-MNIST was not found in {FASHION_MNIST_SYSTEM_DIR}; as root, "
            "`apt-get install dataset-fashion-mnist` installs it)"
        )

    timings = {}
    for model, epochs in (("gan", gan_epochs), ("vae", vae_epochs)):
        config = RunConfig(
            model=model,
            dataset=dataset,
            epochs=epochs,
            batch_size=64,
            seed=0,
            out=str(out / model),
            data_dir=args.data_dir,
            limit=limit,
        )
        start = time.perf_counter()
        train(config, progress=not args.no_progress)
        timings[model] = time.perf_counter() - start

    vae_result = evaluate_vae(latest_checkpoint(out / "vae"), data_dir=args.data_dir, limit=limit)
    gan_grid = out / "gan" / f"samples_epoch_{gan_epochs:03d}.png"
    vae_grid = out / "vae" / f"samples_epoch_{vae_epochs:03d}.png"
    summary = {
        "dataset": dataset,
        "limit": limit,
        "seconds": timings,
        "vae_test_neg_elbo_nats": vae_result["neg_elbo"],
        "pictures": {
            "gan_samples": str(gan_grid),
            "gan_losses": str(out / "gan" / "losses.png"),
            "vae_samples": str(vae_grid),
            "vae_reconstructions": str(out / "vae" / "reconstructions.png"),
            "vae_interpolation": str(out / "vae" / "interpolation.png"),
            "vae_losses": str(out / "vae" / "losses.png"),
        },
    }
    path = out / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, path)

    print(f"\nGAN: {timings['gan']:.0f} s, VAE: {timings['vae']:.0f} s")
    print(
        f"VAE test negative ELBO: {vae_result['neg_elbo']:.1f} nats/image "
        f"(reconstruction {vae_result['recon']:.1f} + KL {vae_result['kl']:.1f})"
    )
    print("Pictures:")
    for label, picture in summary["pictures"].items():
        print(f"  {label:<20} {picture}")
    print(f"Summary: {path}")


if __name__ == "__main__":
    main()
