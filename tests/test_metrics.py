"""Tests for tinygen.metrics: the Frechet distance, the cached feature classifier, class shares."""

from __future__ import annotations

import numpy as np
import pytest

import tinygen as tg
from tinygen import backend
from tinygen.data import load_dataset
from tinygen.metrics import (
    FEATURE_DIM,
    class_shares,
    evaluate_generated,
    feature_classifier,
    feature_statistics,
    frechet_distance,
    image_features,
)


def random_covariance(rng: np.random.Generator, F: int) -> np.ndarray:
    A = rng.standard_normal((F, 2 * F))
    return A @ A.T / (2 * F)  # (F, F), symmetric positive definite


# ---------------------------------------------------------------------------
# The distance itself
# ---------------------------------------------------------------------------


def test_frechet_distance_of_a_gaussian_to_itself_is_zero():
    rng = np.random.default_rng(0)
    mu, cov = rng.standard_normal(6), random_covariance(rng, 6)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form():
    """For diagonal covariances the matrix square root acts per dimension:
    FD = |mu1 - mu2|^2 + sum_i (s1_i - s2_i)^2 with s the standard deviations."""
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 0.1])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    got = frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances():
    scipy_linalg = pytest.importorskip("scipy.linalg", reason="scipy gives the reference sqrtm")
    rng = np.random.default_rng(1)
    for F in (2, 5, 20):
        mu1, mu2 = rng.standard_normal(F), rng.standard_normal(F)
        c1, c2 = random_covariance(rng, F), random_covariance(rng, F)
        root = scipy_linalg.sqrtm(c1 @ c2).real
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * root)
        assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)
        assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="frechet_distance: expected mu"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_statistics_are_the_mean_and_unbiased_covariance():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 4))
    mu, cov = feature_statistics(x)
    np.testing.assert_allclose(mu, x.mean(axis=0))
    np.testing.assert_allclose(cov, (x - mu).T @ (x - mu) / 49)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(x[:1])


# ---------------------------------------------------------------------------
# The classifier, its cache, and the evaluation of generated images
# ---------------------------------------------------------------------------


# A quick recipe for the tests (32 steps); the default one is for real datasets.
QUICK = {"epochs": 2, "batch_size": 32, "lr": 3e-3}


@pytest.fixture(scope="module")
def shapes_classifier(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    model, about = feature_classifier("shapes", limit=512, cache_dir=cache, **QUICK)
    return model, about, cache


def test_classifier_learns_the_classes_and_leaves_the_global_random_state_alone(tmp_path):
    tg.manual_seed(5)
    state = backend.get_rng_state()
    model, about = feature_classifier("shapes", limit=512, cache_dir=tmp_path, **QUICK)
    assert backend.get_rng_state() == state
    assert about["test_accuracy"] > 0.6  # 4 classes: chance is 0.25
    features = image_features(model, load_dataset("shapes", "test", limit=10).images)
    assert features.shape == (10, FEATURE_DIM)


def test_classifier_is_cached_and_reloaded_with_the_same_weights(shapes_classifier):
    model, about, cache = shapes_classifier
    again, about_again = feature_classifier("shapes", limit=512, cache_dir=cache, **QUICK)
    assert about_again == about
    images = load_dataset("shapes", "test", limit=8).images
    np.testing.assert_array_equal(image_features(model, images), image_features(again, images))
    assert len(list(cache.glob("classifier-shapes-*.npz"))) == 1


def test_class_shares_sum_to_one_and_follow_the_classes(shapes_classifier):
    model, _, _ = shapes_classifier
    test = load_dataset("shapes", "test", limit=200)
    shares = class_shares(model, test.images, 4)
    assert shares.sum() == pytest.approx(1.0)
    for c in range(4):  # the images of one class go mostly to that class
        shares_c = class_shares(model, test.images[test.labels == c], 4)
        assert np.argmax(shares_c) == c, (c, shares_c)


def test_real_images_score_far_better_than_noise(shapes_classifier):
    _, _, cache = shapes_classifier
    real = load_dataset("shapes", "train", limit=512).images[256:512]  # not the floor's images
    noise = np.random.default_rng(0).random((256, 1, 28, 28)).astype(np.float32)
    good = evaluate_generated(real, "shapes", limit=512, cache_dir=cache, **QUICK)
    bad = evaluate_generated(noise, "shapes", limit=512, cache_dir=cache, **QUICK)
    assert good["frechet_distance"] < 0.2 * bad["frechet_distance"]
    assert set(good["class_shares"]) == {"square", "circle", "cross", "triangle"}
    assert good["num_generated"] == 256 and good["num_test"] == 512
