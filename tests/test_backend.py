"""Tests of tinygen/backend.py: the array module, devices, and the `info()` report.

What they prove: NumPy arrays get NumPy; mixing devices is refused; device
names are checked; without cupy or a GPU, asking for 'cuda' raises an error
that says why, and everything else works; `tinygen.info()` reports its keys
without printing. A GPU test runs a forward and backward pass on cupy and
compares with the CPU; it skips with a reason where cupy or a GPU is missing.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinygen as tg
from tinygen import backend


def test_numpy_arrays_and_numbers_get_numpy():
    assert backend.get_array_module(np.zeros(2)) is np
    assert backend.get_array_module(np.zeros(2), 3.0, None) is np
    assert backend.get_array_module() is np


def test_device_names_are_checked():
    assert backend.normalize_device("cpu") == "cpu"
    assert backend.normalize_device("cuda:0") == "cuda"
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        backend.normalize_device("tpu")


def test_to_the_cpu_of_a_cpu_array_does_not_copy():
    array = np.zeros(3)
    assert backend.to_device(array, "cpu") is array
    assert backend.device_of(array) == "cpu"


def test_default_dtype_is_float32():
    assert backend.DEFAULT_DTYPE is np.float32
    assert tg.zeros(1).dtype == np.float32


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present, so 'cuda' works here")
def test_cuda_without_a_gpu_says_why():
    reason = backend.cupy_unavailable_reason()
    assert isinstance(reason, str) and reason
    with pytest.raises(RuntimeError, match=r"device 'cuda' is not available here: .+"):
        tg.zeros(2).to("cuda")
    with pytest.raises(RuntimeError, match="not available"):
        tg.randn(2, device="cuda")


def test_info_reports_its_keys_and_prints_nothing(capsys):
    try:
        import tinygen.kernels  # noqa: F401  (info() reports the kernels' state)
    except ImportError as error:
        pytest.skip(f"tinygen.kernels is not importable yet: {error}")
    report = tg.info()
    expected = {"python", "numpy", "default_dtype", "cupy", "gpu", "TINYGEN_KERNELS"}
    expected |= {"cpu_kernels", "gpu_kernels", "numba"}
    assert expected <= set(report), f"missing: {expected - set(report)}"
    assert report["numpy"] == np.__version__
    assert report["default_dtype"] == "float32"
    if report["numba"] is not None:
        for key in ("numba_threading_layer", "numba_cache_dir"):
            assert key in report
    assert capsys.readouterr().out == ""


def _cupy_or_skip():
    cp = backend.cupy_module()
    if cp is None:
        pytest.skip(f"needs cupy and a CUDA GPU: {backend.cupy_unavailable_reason()}")
    return cp


@pytest.mark.gpu
def test_forward_and_backward_on_the_gpu_equal_the_cpu():
    cp = _cupy_or_skip()
    rng = np.random.default_rng(0)
    x0, w0 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))

    def run(device):
        x = tg.tensor(x0, requires_grad=True, device=device)
        w = tg.tensor(w0, requires_grad=True, device=device)
        y = (x @ w).tanh() * tg.sigmoid(x.sum(axis=1, keepdims=True))
        loss = tg.logsumexp(tg.clip(y, -0.5, 0.5) + tg.maximum(y, 0.1), axis=0).sum()
        loss.backward()
        return loss.numpy(), x.grad.numpy(), w.grad.numpy()

    for cpu, gpu in zip(run("cpu"), run("cuda")):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-10, atol=1e-12)
    assert backend.get_array_module(tg.zeros(2, device="cuda").data) is cp


@pytest.mark.gpu
def test_gradcheck_runs_on_the_gpu():
    _cupy_or_skip()
    x = tg.tensor(np.random.default_rng(0).uniform(0.5, 2.0, (2, 3)), device="cuda")
    x.requires_grad_()
    assert tg.gradcheck(lambda x: (x.log() * x).sum(axis=0), [x])


@pytest.mark.gpu
def test_moving_a_computed_tensor_between_devices_keeps_the_graph():
    _cupy_or_skip()
    x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = (x * 3.0).to("cuda")  # a computed tensor: the move is differentiable
    assert h.device == "cuda" and h.creator is not None
    (h * h).sum().to("cpu").backward()
    np.testing.assert_allclose(x.grad.numpy(), 18.0 * x.numpy())  # d(9x^2)/dx
    moved_leaf = x.to("cuda")
    assert moved_leaf.is_leaf and moved_leaf.requires_grad


@pytest.mark.gpu
def test_mixing_devices_is_refused():
    _cupy_or_skip()
    with pytest.raises(ValueError, match="different devices"):
        tg.zeros(2) + tg.zeros(2, device="cuda")
