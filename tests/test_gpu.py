"""The GPU path: every check here runs on cupy arrays and compares with the CPU.

Skipped, with the reason, where cupy or a GPU is missing. `benchmarks/gpu_check.sh`
runs this file on a machine with a GPU.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygen as tg
import tinygen.nn.functional as F
from tinygen import backend, kernels, nn, optim
from tinygen.kernels import gpu as gpu_kernels
from tinygen.kernels import reference

pytestmark = pytest.mark.gpu

cp = backend.cupy_module()
if cp is None:
    pytest.skip(
        f"cupy or a GPU is missing here ({backend.cupy_unavailable_reason()})",
        allow_module_level=True,
    )


def on_gpu(array, requires_grad=False):
    return tg.Tensor(cp.asarray(array), requires_grad=requires_grad)


@st.composite
def conv_geometry(draw):
    """A small convolution whose kernel fits its padded input."""
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    SH, SW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    PH, PW = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    DH, DW = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H = draw(st.integers(max(1, DH * (KH - 1) + 1 - 2 * PH), 9))
    W = draw(st.integers(max(1, DW * (KW - 1) + 1 - 2 * PW), 9))
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (N, C, H, W), (KH, KW), (SH, SW), (PH, PW), (DH, DW)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(conv_geometry())
def test_gpu_kernels_equal_reference_bit_for_bit_in_float64(geometry):
    shape, kernel, stride, padding, dilation = geometry
    x = np.random.default_rng(0).standard_normal(shape)
    col = reference.im2col(x, kernel, stride, padding, dilation)
    col_gpu = gpu_kernels.im2col(cp.asarray(x), kernel, stride, padding, dilation)
    np.testing.assert_array_equal(col_gpu.get(), col)

    c = np.random.default_rng(1).standard_normal(col.shape)
    back = reference.col2im(c, shape, kernel, stride, padding, dilation)
    back_gpu = gpu_kernels.col2im(cp.asarray(c), shape, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(back_gpu.get(), back)


def test_dispatch_sends_cupy_arrays_to_the_cuda_kernels():
    assert kernels.kernel_choice(cp.zeros((1, 1, 2, 2))) == "cuda"


def test_col2im_on_the_gpu_is_deterministic():
    shape, kernel, stride, padding, dilation = (4, 8, 15, 15), (4, 4), (2, 2), (1, 1), (1, 1)
    OH = reference.conv_output_size(15, 4, 2, 1, 1)
    c = cp.asarray(np.random.default_rng(2).standard_normal((8 * 16, 4 * OH * OH)), cp.float32)
    first = gpu_kernels.col2im(c, shape, kernel, stride, padding, dilation)
    for _ in range(3):
        again = gpu_kernels.col2im(c, shape, kernel, stride, padding, dilation)
        assert bool((again == first).all())


@pytest.mark.parametrize("transposed", [False, True])
def test_conv_forward_and_gradients_match_the_cpu(transposed):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 7, 6))
    if transposed:
        w = rng.standard_normal((4, 3, 4, 3))
        fn = lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)  # noqa: E731
    else:
        w = rng.standard_normal((3, 4, 3, 2))
        fn = lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=(1, 0), dilation=(1, 2))  # noqa: E731
    b = rng.standard_normal(3)
    results = []
    for make in (lambda a: tg.Tensor(a, requires_grad=True), lambda a: on_gpu(a, True)):
        xs = [make(a) for a in (x, w, b)]
        y = fn(*xs)
        (y * y).sum().backward()
        results.append([y.numpy(), *(t.grad.numpy() for t in xs)])
    for cpu_value, gpu_value in zip(*results):
        np.testing.assert_allclose(gpu_value, cpu_value, rtol=1e-11, atol=1e-11)


def test_gradcheck_of_conv2d_and_conv_transpose2d_on_the_gpu():
    rng = np.random.default_rng(4)
    x = on_gpu(rng.standard_normal((2, 2, 5, 5)), True)
    w = on_gpu(rng.standard_normal((3, 2, 3, 3)), True)
    b = on_gpu(rng.standard_normal(3), True)
    tg.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [x, w, b])
    tg.gradgradcheck(lambda x, w: F.conv2d(x, w, padding=1), [x, w])
    wt = on_gpu(rng.standard_normal((2, 3, 4, 4)), True)
    tg.gradcheck(lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1), [x, wt])


def test_gradcheck_of_the_layers_on_the_gpu():
    """Input gradients through each layer in float64 on the GPU (BatchNorm in both modes)."""
    tg.manual_seed(5)
    layers = [
        (nn.Linear(6, 4), (3, 6)),
        (nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 5, 5)),
        (nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1), (2, 2, 3, 3)),
        (nn.BatchNorm2d(2), (4, 2, 3, 3)),
        (nn.BatchNorm1d(3), (5, 3)),
        (nn.BatchNorm1d(3).eval(), (5, 3)),
    ]
    for layer, shape in layers:
        layer.double().to("cuda")
        x = on_gpu(np.random.default_rng(6).standard_normal(shape), True)
        tg.gradcheck(lambda x, layer=layer: layer(x), [x])


def test_a_module_moves_parameters_and_buffers_to_the_gpu():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    model.to("cuda")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert tensor.device == "cuda", name
    y = model(on_gpu(np.ones((2, 1, 5, 5), np.float32)))
    assert y.device == "cuda"


def test_mixing_devices_names_both():
    with pytest.raises(ValueError, match="cpu.*cuda|cuda.*cpu"):
        tg.ones(2) + on_gpu(np.ones(2, np.float32))


def test_an_adam_step_on_the_gpu_matches_the_cpu():
    results = []
    for device in ("cpu", "cuda"):
        tg.manual_seed(7)
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 1)
        )
        model.to(device)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        x = tg.tensor(np.random.default_rng(8).standard_normal((8, 1, 4, 4)), tg.float32)
        x = x.to(device)
        for _ in range(3):
            opt.zero_grad()
            loss = (model(x) ** 2).mean()
            loss.backward()
            opt.step()
        results.append([p.numpy() for p in model.parameters()])
    for cpu_value, gpu_value in zip(*results):
        np.testing.assert_allclose(gpu_value, cpu_value, rtol=1e-4, atol=1e-5)


def _train_steps(device, kind):
    """Three training steps of a small DCGAN or ConvVAE from one seed; the parameters after."""
    from tinygen.models import dcgan, vae

    tg.manual_seed(9)
    images = np.random.default_rng(10).random((8, 1, 28, 28)).astype(np.float32)
    if kind == "gan":
        G, D = dcgan.build_dcgan(latent_dim=8, width=8)
        G.to(device), D.to(device)
        opt_g = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        real = tg.tensor(images * 2 - 1).to(device)
        for _ in range(3):
            dcgan.gan_step(G, D, opt_g, opt_d, real)
        return [p.numpy() for p in [*G.parameters(), *D.parameters()]]
    model = vae.ConvVAE(latent_dim=4, width=8)
    model.to(device)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x = tg.tensor(images).to(device)
    for _ in range(3):
        vae.vae_step(model, opt, x)
    return [p.numpy() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_training_steps_on_the_gpu_match_the_cpu_within_float32_round_off(kind):
    cpu_params = _train_steps("cpu", kind)
    gpu_params = _train_steps("cuda", kind)
    for cpu_value, gpu_value in zip(cpu_params, gpu_params):
        np.testing.assert_allclose(gpu_value, cpu_value, rtol=1e-3, atol=1e-4)
