"""The `tinygen` command: train the DCGAN or the VAE, sample from a checkpoint, evaluate it.

    tinygen train gan --dataset fashion-mnist --epochs 5 --batch-size 64 --seed 0 --out runs/gan
    tinygen train vae --dataset digits --epochs 20 --out runs/vae --resume
    tinygen sample runs/gan/checkpoint_epoch_005.npz --n 64 --out samples.png
    tinygen sample runs/vae/checkpoint_epoch_005.npz --n 1000 --out samples.npy
    tinygen eval vae runs/vae/checkpoint_epoch_005.npz
    tinygen eval gan runs/gan/checkpoint_epoch_005.npz
    tinygen info

Exit codes: 0 success, 2 a usage error or missing input (dataset files, checkpoint), which
is reported in one message without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DATASETS = ("fashion-mnist", "mnist", "digits", "shapes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinygen", description="Train and evaluate tinygen's DCGAN and VAE."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train the DCGAN (gan) or the VAE (vae)")
    train.add_argument("model", choices=("gan", "vae"))
    train.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default=None, help="run folder (default runs/<model>)")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    train.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    train.add_argument("--data-dir", default=None, help="folder with the IDX files")
    train.add_argument("--limit", type=int, default=None, help="use only the first N images")
    train.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    train.add_argument("--latent-dim", type=int, default=None)
    train.add_argument("--width", type=int, default=None, help="channels of the widest layer/2")
    train.add_argument("--kl-weight", type=float, default=1.0, help="VAE: weight of the KL term")
    train.add_argument(
        "--kl-warmup", type=int, default=0, help="VAE: steps of linear KL warm-up from 0"
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    sample = commands.add_parser("sample", help="draw images from a trained checkpoint")
    sample.add_argument("checkpoint")
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--out", required=True, help="FILE.png (a grid) or FILE.npy ([0, 1])")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="cpu", choices=("cpu", "cuda"))

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on the test set")
    evaluate.add_argument("model", choices=("gan", "vae"))
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--data-dir", default=None)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--limit", type=int, default=None, help="use only the first N images")
    evaluate.add_argument("--n", type=int, default=10000, help="GAN: images to generate")
    evaluate.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")

    commands.add_parser("info", help="versions, kernels and devices tinygen uses")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FileNotFoundError as error:
        # A missing dataset or checkpoint: the message says where we looked and what to do.
        print(f"tinygen {args.command}: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"tinygen {args.command}: {error}", file=sys.stderr)
        return 2


def run_train(args: argparse.Namespace) -> int:
    from tinygen.train import RunConfig, train

    config = RunConfig(
        model=args.model,
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        out=args.out or f"runs/{args.model}",
        device=args.device,
        data_dir=args.data_dir,
        limit=args.limit,
        latent_dim=args.latent_dim,
        width=args.width,
        lr=args.lr,
        kl_weight=args.kl_weight,
        kl_warmup_steps=args.kl_warmup,
    )
    summary = train(config, resume=args.resume, progress=not args.no_progress)
    rates = [round(t["images_per_s"]) for t in summary["throughput"]]
    print(f"trained {config.model} for {summary['steps']} steps; images/s per epoch: {rates}")
    print(
        f"run folder: {config.out} (metrics.jsonl, samples_epoch_*.png, losses.png, checkpoints)"
    )
    return 0


def run_sample(args: argparse.Namespace) -> int:
    import tinygen as tg
    from tinygen import viz
    from tinygen.train import generate, load_trained

    out = Path(args.out)
    if out.suffix not in (".png", ".npy"):
        raise ValueError(f"--out must end in .png or .npy, got {args.out!r}")
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    _require_file(args.checkpoint)
    trainer = load_trained(args.checkpoint, args.device)
    tg.manual_seed(args.seed)
    images = generate(trainer, args.n)  # (n, 1, 28, 28) in [0, 1]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, images)
    else:
        nrow = int(np.ceil(np.sqrt(args.n)))
        viz.save_grid(images, out, nrow=nrow, value_range=(0, 1), scale=2)
    print(f"wrote {args.n} samples to {out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from tinygen.train import evaluate_gan, evaluate_vae

    _require_file(args.checkpoint)
    common = {"data_dir": args.data_dir, "seed": args.seed, "limit": args.limit}
    if args.model == "vae":
        result = evaluate_vae(args.checkpoint, device=args.device, **common)
        text = (
            f"{result['dataset']} test set, {result['num_images']} images: negative ELBO "
            f"{result['neg_elbo']:.2f} nats/image = reconstruction {result['recon']:.2f} "
            f"+ KL {result['kl']:.2f}"
        )
    else:
        result = evaluate_gan(args.checkpoint, n=args.n, device=args.device, **common)
        shares = ", ".join(f"{name} {share:.1%}" for name, share in result["class_shares"].items())
        text = (
            f"{result['dataset']}: Frechet distance {result['frechet_distance']:.3f} "
            f"({result['num_generated']} generated vs {result['num_test']} test images; "
            f"real train images score {result['frechet_floor']:.3f})\n"
            f"class shares: {shares}\n"
            f"feature classifier: test accuracy {result['classifier_test_accuracy']:.1%}, "
            f"cached at {result['classifier_cache']}"
        )
    print(json.dumps(result) if args.json else text)
    return 0


def run_info(args: argparse.Namespace) -> int:
    import tinygen

    for key, value in tinygen.info().items():
        print(f"{key:>20}: {value}")
    return 0


def _require_file(path: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")


COMMANDS = {"train": run_train, "sample": run_sample, "eval": run_eval, "info": run_info}

if __name__ == "__main__":
    sys.exit(main())
