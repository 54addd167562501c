"""How good are a generator's samples? A Frechet distance in a classifier's feature space.

The Frechet Inception Distance (FID, Heusel et al. 2017) scores a generator of natural images
by passing real and generated images through an ImageNet classifier (Inception-v3), taking
the activations of a late layer as features, fitting a Gaussian to each set of features, and
measuring the Frechet (2-Wasserstein) distance between the two Gaussians:

    FD = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

mu and S are the mean and covariance of the features of real (r) and generated (g) images.
The first term compares where the two clouds of features sit, the second how they spread:
a generator that draws only sandals (mode collapse) gets a small spread and a shifted mean,
one that draws blurry averages gets features unlike any real image. 0 means equal statistics.

Inception knows nothing of 28x28 grey garments, so tinygen plays the same game with a small
convolutional classifier that it trains itself on the dataset's train split and caches
(`feature_classifier`): the features are its 128 penultimate activations. The number is
comparable only between runs that use the same classifier (same dataset, seed and recipe:
the cache file name says which); it is not comparable with FID figures from papers. As a
floor, `evaluate_generated` also reports the distance between held-out real images and
the train images, which is what a perfect generator would score with this many samples.

The same classifier gives the share of each class among generated images: a healthy
generator on Fashion-MNIST draws each of the ten garments about 10% of the time.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

import tinygen as tg
from tinygen import backend, checkpoint, nn, optim
from tinygen.data import DataLoader, load_dataset
from tinygen.nn import functional as F

FEATURE_DIM = 128
CLASSIFIER_VERSION = 1  # change when the recipe below changes, so old caches are not reused


class FeatureClassifier(nn.Module):
    """A small CNN for (N, 1, 28, 28) images in [0, 1]: features (N, 128) and logits (N, K)."""

    def __init__(self, num_classes: int = 10, channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        side = image_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1),
            nn.ReLU(),  # (N, 32, S/2, S/2)
            nn.Conv2d(32, 64, 4, 2, 1),
            nn.ReLU(),  # (N, 64, S/4, S/4)
            nn.Flatten(),  # (N, 64 (S/4)^2)
            nn.Linear(64 * side * side, FEATURE_DIM),
            nn.ReLU(),  # (N, 128): the features
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)  # (N, K) logits

    def features(self, x: tg.Tensor) -> tg.Tensor:
        return self.body(x)

    def forward(self, x: tg.Tensor) -> tg.Tensor:
        return self.head(self.body(x))


def default_cache_dir() -> Path:
    """$TINYGEN_CACHE, else $XDG_CACHE_HOME/tinygen, else ~/.cache/tinygen."""
    if os.environ.get("TINYGEN_CACHE"):
        return Path(os.environ["TINYGEN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinygen"


def feature_classifier(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[FeatureClassifier, dict]:
    """The classifier of `dataset`, loaded from the cache or trained and cached, in eval mode.

    Trained with Adam on the train split (images in [0, 1]) with cross-entropy, from its own
    seed: tinygen's global random state is saved before and restored after, so evaluating in
    the middle of a run does not change the run. Returns the classifier and a dict with its
    test accuracy and the cache file.
    """
    recipe = {
        "version": CLASSIFIER_VERSION,
        "dataset": dataset,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "limit": limit,
    }
    tag = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    path = Path(cache_dir or default_cache_dir()) / f"classifier-{dataset}-{tag}.npz"
    train = load_dataset(dataset, "train", data_dir, limit=limit)
    saved_state = backend.get_rng_state()  # building a model draws; restored at the end
    try:
        if path.is_file():
            try:
                model = FeatureClassifier(num_classes=len(train.classes))
                stored = checkpoint.load(path, model=model)
                model.eval()
                return model, {"cache": str(path), "test_accuracy": stored["test_accuracy"]}
            except (ValueError, KeyError, OSError) as error:
                warnings.warn(
                    f"feature_classifier: ignoring unreadable cache {path} ({error}); retraining",
                    stacklevel=2,
                )
        tg.manual_seed(seed)
        model = FeatureClassifier(num_classes=len(train.classes))  # initialized from `seed`
        opt = optim.Adam(model.parameters(), lr=lr)
        loader = DataLoader(train, batch_size=batch_size, shuffle=True)
        model.train()
        for _ in range(epochs):
            for images, labels in loader:
                opt.zero_grad()
                loss = F.cross_entropy(model(tg.tensor(images)), tg.tensor(labels))
                loss.backward()
                opt.step()
    finally:
        backend.set_rng_state(saved_state)
    model.eval()
    test = load_dataset(dataset, "test", data_dir, limit=limit)
    accuracy = float(np.mean(predict_classes(model, test.images) == test.labels))
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(path, model=model, test_accuracy=accuracy, recipe=json.dumps(recipe))
    return model, {"cache": str(path), "test_accuracy": accuracy}


def image_features(model: FeatureClassifier, images: np.ndarray, batch_size: int = 500):
    """Features (N, 128) float64 of images (N, 1, 28, 28) in [0, 1]."""
    images = _check_images(images, "image_features")
    out = []
    with tg.no_grad():
        for start in range(0, len(images), batch_size):
            batch = tg.tensor(images[start : start + batch_size])
            out.append(model.features(batch).numpy().astype(np.float64))  # (B, 128)
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


def predict_classes(model: FeatureClassifier, images: np.ndarray, batch_size: int = 500):
    """The classifier's class (argmax of the logits) for each image, (N,) int64."""
    images = _check_images(images, "predict_classes")
    out = []
    with tg.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(tg.tensor(images[start : start + batch_size])).numpy()  # (B, K)
            out.append(np.argmax(logits, axis=1))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of features (N, F), with the unbiased 1/(N-1)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(
            f"feature_statistics: features must be (N, F) with N >= 2, got {features.shape}"
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray
) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) for two Gaussians N(mu1, S1), N(mu2, S2).

    (S1 S2)^(1/2) is not symmetric, but its trace equals that of the symmetric PSD matrix
    (S1^(1/2) S2 S1^(1/2))^(1/2), whose eigenvalues are real and >= 0: so the trace is
    sum_i sqrt(lambda_i) of M = S1^(1/2) S2 S1^(1/2), computed with symmetric eigensolvers
    only (tiny negative eigenvalues from round-off are clipped to 0).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(
            f"frechet_distance: expected mu (F,) and cov (F, F) for both, got mu "
            f"{mu1.shape}, {mu2.shape} and cov {cov1.shape}, {cov2.shape}"
        )
    values, vectors = np.linalg.eigh(cov1)
    sqrt1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T  # S1^(1/2), (F, F)
    M = sqrt1 @ cov2 @ sqrt1  # (F, F), symmetric PSD
    M = 0.5 * (M + M.T)  # remove round-off asymmetry before eigvalsh
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(M), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt)


def class_shares(model: FeatureClassifier, images: np.ndarray, num_classes: int) -> np.ndarray:
    """The fraction of images the classifier assigns to each class, (num_classes,), sums to 1."""
    predicted = predict_classes(model, images)
    return np.bincount(predicted, minlength=num_classes) / max(len(predicted), 1)


def evaluate_generated(
    images: np.ndarray,
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    **classifier_options,
) -> dict:
    """Score generated images (N, 1, 28, 28) in [0, 1] against the test split of `dataset`.

    Returns frechet_distance (generated vs test), frechet_floor (as many train images vs
    test: the score of a perfect generator at this sample size), class_shares (a dict
    class name -> share), the classifier's test accuracy and its cache file.
    `classifier_options` (epochs, batch_size, lr, seed) go to `feature_classifier`.
    """
    images = _check_images(images, "evaluate_generated")
    model, about = feature_classifier(
        dataset, data_dir, limit=limit, cache_dir=cache_dir, **classifier_options
    )
    test = load_dataset(dataset, "test", data_dir, limit=limit)
    train = load_dataset(dataset, "train", data_dir, limit=limit)
    test_stats = feature_statistics(image_features(model, test.images))
    generated_stats = feature_statistics(image_features(model, images))
    # A floor: the first N train images (N = number of generated images, up to the split).
    reference = train.images[: len(images)]
    reference_stats = feature_statistics(image_features(model, reference))
    shares = class_shares(model, images, len(test.classes))
    return {
        "frechet_distance": frechet_distance(*generated_stats, *test_stats),
        "frechet_floor": frechet_distance(*reference_stats, *test_stats),
        "num_generated": len(images),
        "num_test": len(test),
        "class_shares": {name: float(s) for name, s in zip(test.classes, shares)},
        "classifier_test_accuracy": about["test_accuracy"],
        "classifier_cache": about["cache"],
    }


def _check_images(images: np.ndarray, caller: str) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"{caller}: images must be (N, C, H, W), got shape {images.shape}")
    return images
