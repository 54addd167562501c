"""Parity of tinygen.nn, tinygen.optim with PyTorch (skipped when torch is not installed).

What they prove, all in float64 with weights copied from one to the other:
- every layer's forward output and its gradients with respect to the input
  and to each parameter equal PyTorch's to round-off (Linear, Conv2d and
  ConvTranspose2d with their options and output_size, BatchNorm1d/2d in both
  modes, the activations, Flatten, Unflatten, Dropout in eval mode);
- BatchNorm's running statistics after several training steps equal PyTorch's;
- every loss, under every reduction, and its input gradients equal PyTorch's;
- SGD and Adam trajectories over 50 steps equal torch.optim's, with the same
  gradients fed to both and in a full training loop;
- DCGAN-28 and ConvVAE-28 (built here from DESIGN.md with Sequential) have
  the same state_dict keys, shapes and printout as the PyTorch versions, and
  the same outputs and gradients with the same weights;
- the default initialization draws from the same distribution as PyTorch's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinygen as tg
import tinygen.nn.functional as F  # noqa: N812  (the name PyTorch users know)
from tinygen import nn, optim

torch = pytest.importorskip(
    "torch", reason="parity tests compare against PyTorch (pip install torch)"
)
torch_nn = torch.nn
TF = torch.nn.functional

RTOL, ATOL = 1e-10, 1e-12  # float64 round-off, amplified a little by sums over many terms


def copy_weights(ours: nn.Module, theirs) -> None:
    """Copy tinygen's state into the PyTorch module (same keys, strict)."""
    state = {
        key: torch.from_numpy(value.numpy().copy()) for key, value in ours.state_dict().items()
    }
    theirs.load_state_dict(state, strict=True)


def forward_backward(ours: nn.Module, theirs, x: np.ndarray, seed: int = 0, **kwargs):
    """Run both modules on x, backpropagate the same random upstream gradient, compare all."""
    xt = tg.Tensor(x.copy(), requires_grad=True)
    y = ours(xt, **kwargs)
    xp = torch.tensor(x, requires_grad=True)
    yp = theirs(xp, **kwargs)
    np.testing.assert_allclose(y.numpy(), yp.detach().numpy(), rtol=RTOL, atol=ATOL)

    gy = np.random.default_rng([seed, 99]).standard_normal(y.shape)
    (y * tg.Tensor(gy)).sum().backward()
    (yp * torch.from_numpy(gy)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), xp.grad.numpy(), rtol=RTOL, atol=ATOL)
    torch_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        np.testing.assert_allclose(
            param.grad.numpy(), torch_params[name].grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=name
        )


LAYERS = [
    ("Linear", (5, 3), {}, (4, 5)),
    ("Linear", (5, 3), {"bias": False}, (2, 3, 5)),
    ("Conv2d", (4, 6, 3), {"stride": 2, "padding": 1}, (2, 4, 7, 6)),
    (
        "Conv2d",
        (4, 6, (3, 2)),
        {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2},
        (2, 4, 8, 7),
    ),
    ("Conv2d", (1, 8, 4, 2, 1), {"bias": False}, (3, 1, 28, 28)),
    ("ConvTranspose2d", (4, 6, 3), {"stride": 2, "padding": 1, "output_padding": 1}, (2, 4, 5, 4)),
    ("ConvTranspose2d", (4, 6, 4, 2, 1), {"groups": 2, "dilation": 2}, (2, 4, 3, 5)),
    ("ConvTranspose2d", (8, 4, 7, 1, 0), {"bias": False}, (2, 8, 1, 1)),
    ("BatchNorm1d", (3,), {}, (6, 3)),
    ("BatchNorm1d", (3,), {"affine": False}, (4, 3, 5)),
    ("BatchNorm2d", (3,), {"momentum": 0.3, "eps": 1e-3}, (4, 3, 5, 5)),
    ("BatchNorm2d", (3,), {"bias": False}, (2, 3, 2, 3)),
    ("ReLU", (), {}, (3, 4)),
    ("LeakyReLU", (0.2,), {}, (3, 4)),
    ("Tanh", (), {}, (3, 4)),
    ("Sigmoid", (), {}, (3, 4)),
    ("Flatten", (), {}, (2, 3, 2, 2)),
    ("Unflatten", (1, (2, 3)), {}, (4, 6)),
    ("Dropout", (0.5,), {}, (3, 4)),
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name, args, kwargs, shape", LAYERS, ids=lambda v: str(v))
def test_layer_forward_and_backward_match_pytorch(name, args, kwargs, shape, training):
    if name == "Dropout" and training:
        pytest.skip("dropout masks come from different generators; its statistics are tested")
    tg.manual_seed(0)
    ours = getattr(nn, name)(*args, **kwargs).double().train(training)
    theirs = getattr(torch_nn, name)(*args, **kwargs).double().train(training)
    if "BatchNorm" in name:  # non-trivial weights and running statistics
        rng = np.random.default_rng(1)
        C = args[0]
        if ours.weight is not None:
            ours.weight.data[...] = rng.uniform(0.5, 1.5, C)
        if ours.bias is not None:
            ours.bias.data[...] = rng.standard_normal(C)
        ours.running_mean.data[...] = rng.standard_normal(C)
        ours.running_var.data[...] = rng.uniform(0.5, 2.0, C)
    copy_weights(ours, theirs)
    x = np.random.default_rng(2).standard_normal(shape)
    if name in ("ReLU", "LeakyReLU"):
        x = np.where(np.abs(x) < 0.1, 0.5, x)  # away from the kink
    forward_backward(ours, theirs, x)


def test_conv_transpose2d_output_size_matches_pytorch():
    tg.manual_seed(0)
    ours = nn.ConvTranspose2d(3, 2, 4, stride=3, padding=1).double()
    theirs = torch_nn.ConvTranspose2d(3, 2, 4, stride=3, padding=1).double()
    copy_weights(ours, theirs)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    forward_backward(ours, theirs, x, output_size=(13, 15))


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("kind, shape", [("BatchNorm1d", (8, 4)), ("BatchNorm2d", (4, 4, 3, 3))])
def test_batchnorm_running_statistics_match_pytorch_after_several_steps(kind, shape, momentum):
    ours = getattr(nn, kind)(4, momentum=momentum).double()
    theirs = getattr(torch_nn, kind)(4, momentum=momentum).double()
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = rng.normal(2.0, 3.0, shape)
        ours(tg.Tensor(x))
        theirs(torch.from_numpy(x))
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(
            ours.state_dict()[key].numpy(), value.numpy(), rtol=1e-13, atol=0, err_msg=key
        )
    x = rng.normal(size=shape)
    ours.eval()
    theirs.eval()
    forward_backward(ours, theirs, x)


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def loss_case(name: str, rng: np.random.Generator):
    """(tinygen call, torch call, input array, extra arrays) for one loss."""
    x = rng.normal(0, 3, (4, 5))
    z = rng.uniform(0, 1, (4, 5))
    w = rng.uniform(0.5, 2, (4, 5))
    if name == "bce_with_logits":
        x[0, :2] = [120.0, -1e4]  # extremes stay finite and equal
        return (
            lambda x, r: F.binary_cross_entropy_with_logits(x, z, weight=w, reduction=r),
            lambda x, r: TF.binary_cross_entropy_with_logits(
                x, torch.from_numpy(z), weight=torch.from_numpy(w), reduction=r
            ),
            x,
        )
    if name == "bce":
        p = rng.uniform(0.02, 0.98, (4, 5))
        p[0, :2] = [0.0, 1.0]  # the clamp at log = -100
        return (
            lambda x, r: F.binary_cross_entropy(x, z, reduction=r),
            lambda x, r: TF.binary_cross_entropy(x, torch.from_numpy(z), reduction=r),
            p,
        )
    if name in ("mse", "l1"):
        ours, theirs = (F.mse_loss, TF.mse_loss) if name == "mse" else (F.l1_loss, TF.l1_loss)
        return (
            lambda x, r: ours(x, z, reduction=r),
            lambda x, r: theirs(x, torch.from_numpy(z), reduction=r),
            x,
        )
    if name == "cross_entropy":
        logits = rng.normal(0, 2, (3, 4, 2, 2))
        t = rng.integers(0, 4, (3, 2, 2))
        cw = rng.uniform(0.5, 2, 4)
        return (
            lambda x, r: F.cross_entropy(x, t, weight=cw, reduction=r),
            lambda x, r: TF.cross_entropy(
                x, torch.from_numpy(t), weight=torch.from_numpy(cw), reduction=r
            ),
            logits,
        )
    if name == "cross_entropy_probabilities":
        q = rng.dirichlet(np.ones(5), size=4)
        return (
            lambda x, r: F.cross_entropy(x, q, reduction=r),
            lambda x, r: TF.cross_entropy(x, torch.from_numpy(q), reduction=r),
            x,
        )
    if name == "nll":
        logp = np.log(rng.dirichlet(np.ones(5), size=4))
        t = rng.integers(0, 5, 4)
        return (
            lambda x, r: F.nll_loss(x, t, reduction=r),
            lambda x, r: TF.nll_loss(x, torch.from_numpy(t), reduction=r),
            logp,
        )
    raise AssertionError(name)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "name",
    ["bce_with_logits", "bce", "mse", "l1", "cross_entropy", "cross_entropy_probabilities", "nll"],
)
def test_loss_value_and_gradient_match_pytorch(name, reduction):
    ours, theirs, x = loss_case(name, np.random.default_rng(4))
    xt = tg.Tensor(x.copy(), requires_grad=True)
    xp = torch.tensor(x, requires_grad=True)
    y, yp = ours(xt, reduction), theirs(xp, reduction)
    np.testing.assert_allclose(y.numpy(), yp.detach().numpy(), rtol=RTOL, atol=ATOL)
    assert np.all(np.isfinite(y.numpy()))
    gy = np.random.default_rng(5).standard_normal(y.shape)
    (y * tg.Tensor(gy)).sum().backward()
    (yp * torch.from_numpy(gy)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), xp.grad.numpy(), rtol=RTOL, atol=ATOL)


def test_gaussian_kl_matches_the_pytorch_vae_example_formula():
    rng = np.random.default_rng(6)
    mu, logvar = rng.normal(size=(5, 16)), rng.normal(0, 0.5, (5, 16))
    mt, lt = tg.Tensor(mu, requires_grad=True), tg.Tensor(logvar, requires_grad=True)
    mp, lp = torch.tensor(mu, requires_grad=True), torch.tensor(logvar, requires_grad=True)
    ours = F.gaussian_kl(mt, lt, reduction="sum")
    theirs = -0.5 * torch.sum(1 + lp - mp.pow(2) - lp.exp())
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-13)
    ours.backward()
    theirs.backward()
    np.testing.assert_allclose(mt.grad.numpy(), mp.grad.numpy(), rtol=1e-13)
    np.testing.assert_allclose(lt.grad.numpy(), lp.grad.numpy(), rtol=1e-13)


# ---------------------------------------------------------------------------
# Optimizers: 50 steps
# ---------------------------------------------------------------------------


def synthetic_gradient(p: np.ndarray, step: int) -> np.ndarray:
    return (
        p**3 - 0.5 * p + 0.1 * math.cos(step) + 0.05 * np.sin(np.arange(p.size)).reshape(p.shape)
    )


OPTIMIZERS = [
    ("SGD", {"lr": 0.05}),
    ("SGD", {"lr": 0.02, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.02, "momentum": 0.9, "nesterov": True}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 2e-4, "betas": (0.5, 0.999)}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.01, "amsgrad": True, "eps": 1e-6}),
]


@pytest.mark.parametrize("name, options", OPTIMIZERS, ids=lambda v: str(v))
def test_optimizer_trajectory_matches_pytorch_over_50_steps(name, options):
    start = np.random.default_rng(7).uniform(-1.5, 1.5, (3, 4))
    ours_p = nn.Parameter(start.copy())
    theirs_p = torch.nn.Parameter(torch.from_numpy(start.copy()))
    ours = getattr(optim, name)([ours_p], **options)
    theirs = getattr(torch.optim, name)([theirs_p], **options)
    for t in range(50):
        ours_p.grad = tg.Tensor(synthetic_gradient(ours_p.numpy(), t))
        theirs_p.grad = torch.from_numpy(synthetic_gradient(theirs_p.detach().numpy(), t))
        ours.step()
        theirs.step()
        np.testing.assert_allclose(
            ours_p.numpy(), theirs_p.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=f"step {t}"
        )


@pytest.mark.parametrize("name, options", OPTIMIZERS[1:2] + OPTIMIZERS[4:], ids=lambda v: str(v))
def test_training_loop_matches_pytorch_over_50_steps(name, options):
    def build(module):
        return module.Sequential(
            module.Linear(3, 8), module.BatchNorm1d(8), module.Tanh(), module.Linear(8, 1)
        )

    tg.manual_seed(0)
    ours = build(nn).double()
    theirs = build(torch_nn).double()
    copy_weights(ours, theirs)
    ours_opt = getattr(optim, name)(ours.parameters(), **options)
    theirs_opt = getattr(torch.optim, name)(theirs.parameters(), **options)
    rng = np.random.default_rng(8)
    for _ in range(50):
        x, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 1))
        ours_opt.zero_grad()
        loss = F.mse_loss(ours(tg.Tensor(x)), y)
        loss.backward()
        ours_opt.step()
        theirs_opt.zero_grad()
        theirs_loss = TF.mse_loss(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        theirs_loss.backward()
        theirs_opt.step()
        np.testing.assert_allclose(loss.item(), theirs_loss.item(), rtol=1e-10)
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(
            ours.state_dict()[key].numpy(), value.numpy(), rtol=1e-9, atol=1e-12, err_msg=key
        )


# ---------------------------------------------------------------------------
# The reference models of DESIGN.md
# ---------------------------------------------------------------------------


def dcgan28(m, nz: int = 64):
    """Generator and discriminator of DCGAN-28, built from m = tinygen.nn or torch.nn."""
    generator = m.Sequential(
        m.ConvTranspose2d(nz, 128, 7, 1, 0, bias=False),  # (N, 128, 7, 7)
        m.BatchNorm2d(128),
        m.ReLU(),
        m.ConvTranspose2d(128, 64, 4, 2, 1, bias=False),  # (N, 64, 14, 14)
        m.BatchNorm2d(64),
        m.ReLU(),
        m.ConvTranspose2d(64, 1, 4, 2, 1, bias=False),  # (N, 1, 28, 28)
        m.Tanh(),
    )
    discriminator = m.Sequential(
        m.Conv2d(1, 64, 4, 2, 1, bias=False),  # (N, 64, 14, 14)
        m.LeakyReLU(0.2),
        m.Conv2d(64, 128, 4, 2, 1, bias=False),  # (N, 128, 7, 7)
        m.BatchNorm2d(128),
        m.LeakyReLU(0.2),
        m.Conv2d(128, 1, 7, 1, 0, bias=False),  # (N, 1, 1, 1)
        m.Flatten(),  # (N, 1): one logit
    )
    return generator, discriminator


def conv_vae28(m, latent: int = 16):
    """Encoder and decoder of ConvVAE-28 (the encoder's 32 outputs are mu and log-variance)."""
    encoder = m.Sequential(
        m.Conv2d(1, 32, 4, 2, 1),  # (N, 32, 14, 14)
        m.ReLU(),
        m.Conv2d(32, 64, 4, 2, 1),  # (N, 64, 7, 7)
        m.ReLU(),
        m.Flatten(),  # (N, 3136)
        m.Linear(3136, 2 * latent),  # (N, 32) = mu, logvar
    )
    decoder = m.Sequential(
        m.Linear(latent, 3136),
        m.ReLU(),
        m.Unflatten(1, (64, 7, 7)),  # (N, 64, 7, 7)
        m.ConvTranspose2d(64, 32, 4, 2, 1),  # (N, 32, 14, 14)
        m.ReLU(),
        m.ConvTranspose2d(32, 1, 4, 2, 1),  # (N, 1, 28, 28) logits
    )
    return encoder, decoder


@pytest.mark.parametrize("build", [dcgan28, conv_vae28])
def test_reference_models_have_pytorchs_state_dict_keys_shapes_and_printout(build):
    for ours, theirs in zip(build(nn), build(torch_nn)):
        ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
        assert list(ours_state) == list(theirs_state)
        for key, value in theirs_state.items():
            assert ours_state[key].shape == tuple(value.shape), key
            assert ours_state[key].dtype.kind == ("i" if value.dtype == torch.int64 else "f")
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
        assert repr(ours) == repr(theirs)
        # and PyTorch's weights load into ours as they are
        ours.load_state_dict({k: v.numpy() for k, v in theirs_state.items()})


def test_dcgan28_outputs_and_gradients_match_pytorch():
    tg.manual_seed(0)
    ours_g, ours_d = dcgan28(nn)
    theirs_g, theirs_d = dcgan28(torch_nn)
    for ours, theirs in ((ours_g, theirs_g), (ours_d, theirs_d)):
        ours.double()
        theirs.double()
        copy_weights(ours, theirs)
    rng = np.random.default_rng(9)
    forward_backward(ours_g, theirs_g, rng.standard_normal((3, 64, 1, 1)))
    forward_backward(ours_d, theirs_d, rng.uniform(-1, 1, (3, 1, 28, 28)))


def test_conv_vae28_outputs_and_gradients_match_pytorch():
    tg.manual_seed(0)
    ours_e, ours_d = conv_vae28(nn)
    theirs_e, theirs_d = conv_vae28(torch_nn)
    for ours, theirs in ((ours_e, theirs_e), (ours_d, theirs_d)):
        ours.double()
        theirs.double()
        copy_weights(ours, theirs)
    rng = np.random.default_rng(10)
    forward_backward(ours_e, theirs_e, rng.uniform(0, 1, (2, 1, 28, 28)))
    forward_backward(ours_d, theirs_d, rng.standard_normal((2, 16)))


# ---------------------------------------------------------------------------
# Default initialization
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, args",
    [("Linear", (300, 200)), ("Conv2d", (32, 64, 3)), ("ConvTranspose2d", (64, 32, 4))],
)
def test_default_initialization_has_pytorchs_distribution(name, args):
    tg.manual_seed(0)
    torch.manual_seed(0)
    ours, theirs = getattr(nn, name)(*args), getattr(torch_nn, name)(*args)
    for key in ("weight", "bias"):
        a = ours.state_dict()[key].numpy().astype(np.float64).ravel()
        b = theirs.state_dict()[key].numpy().astype(np.float64).ravel()
        bound = max(np.abs(a).max(), np.abs(b).max())
        # both uniform on the same interval: same largest magnitude (within a sample's
        # reach of the bound) and the same variance within sampling error
        assert np.abs(a).max() == pytest.approx(np.abs(b).max(), rel=0.05)
        se = bound**2 * 0.3 * math.sqrt(1 / a.size + 1 / b.size)
        assert abs(a.var() - b.var()) < 5 * se
