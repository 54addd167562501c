"""Tests of tinygen/checkpoint.py: save and load modules, optimizers and values atomically.

What they prove:
- a round trip restores a model's outputs (train and eval mode), its
  buffers, the optimizer's state and hyperparameters, and plain values (step,
  epoch, nested dicts, the RNG state), and returns what was not loaded;
- training resumed from a checkpoint (model, optimizer, step, RNG state)
  continues bit for bit as the uninterrupted run, dropout masks and data
  order included;
- a save that fails half-way (simulated: the writer dies after writing part
  of the archive) leaves the previous checkpoint intact and no temporary file;
- loading a truncated file, a foreign .npz, a bare .npy, a text file, or a
  checkpoint into a model of another shape raises CheckpointError naming the
  problem, and leaves the model and the optimizer untouched;
- what a checkpoint cannot hold is refused at save time with a clear message.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import tinygen as tg
from tinygen import checkpoint, nn, optim
from tinygen.checkpoint import CheckpointError


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 1)
    )


def train_steps(model, opt, steps: int) -> list:
    """A few Adam steps on random batches drawn from tinygen's generator; returns the losses."""
    losses = []
    for _ in range(steps):
        x = tg.randn(16, 4, dtype=np.float64)
        target = tg.randn(16, 1, dtype=np.float64)
        opt.zero_grad()
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def trained(seed: int = 0, steps: int = 3):
    tg.manual_seed(seed)
    model = make_model().double()
    opt = optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    train_steps(model, opt, steps)
    return model, opt


def test_round_trip_restores_outputs_state_and_values(tmp_path):
    model, opt = trained()
    path = tmp_path / "ckpt.npz"
    rng_state = tg.get_rng_state()
    checkpoint.save(
        path, model=model, opt=opt, step=3, epoch=1, info={"lr": [1e-2, 0.5], "name": "run"},
        rng=rng_state, fixed_noise=tg.randn(2, 3), table=np.arange(6).reshape(2, 3),
    )  # fmt: skip

    tg.manual_seed(99)
    other = make_model().double()
    other_opt = optim.Adam(other.parameters(), lr=0.5, amsgrad=True)
    values = checkpoint.load(path, model=other, opt=other_opt)

    assert values["step"] == 3 and values["epoch"] == 1
    assert values["info"] == {"lr": [1e-2, 0.5], "name": "run"}
    assert values["rng"] == rng_state
    assert values["fixed_noise"].shape == (2, 3) and values["table"].dtype == np.arange(1).dtype
    assert set(values) == {"step", "epoch", "info", "rng", "fixed_noise", "table"}

    for (k1, a), (k2, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k1 == k2 and a.dtype == b.dtype
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = tg.randn(5, 4, dtype=np.float64)
    model.eval()
    other.eval()
    np.testing.assert_array_equal(model(x).numpy(), other(x).numpy())

    saved, restored = opt.state_dict(), other_opt.state_dict()
    assert saved["param_groups"] == restored["param_groups"]
    assert saved["state"].keys() == restored["state"].keys()
    for index, entries in saved["state"].items():
        for key, value in entries.items():
            np.testing.assert_array_equal(restored["state"][index][key], value)


def test_resumed_training_continues_bit_for_bit(tmp_path):
    # the uninterrupted run: 3 + 4 steps
    model, opt = trained(seed=5, steps=3)
    path = tmp_path / "resume.npz"
    checkpoint.save(path, model=model, opt=opt, step=3, rng=tg.get_rng_state())
    expected_losses = train_steps(model, opt, 4)
    expected_state = {k: v.numpy().copy() for k, v in model.state_dict().items()}

    # a fresh process would build everything anew, with other weights and another seed
    tg.manual_seed(1234)
    resumed = make_model().double()
    resumed_opt = optim.Adam(resumed.parameters(), lr=1e-2, amsgrad=True)
    values = checkpoint.load(path, model=resumed, opt=resumed_opt)
    tg.set_rng_state(values["rng"])
    assert values["step"] == 3
    losses = train_steps(resumed, resumed_opt, 4)

    assert losses == expected_losses
    for key, value in resumed.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), expected_state[key], err_msg=key)


def test_save_killed_half_way_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, opt = trained()
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, model=model, opt=opt, step=1)
    before = path.read_bytes()

    real_savez = np.savez

    def dying_savez(file, **arrays):
        real_savez(file, **arrays)
        file.seek(len(before) // 3)
        file.truncate()  # part of the archive is on disk ...
        raise KeyboardInterrupt("killed while writing")  # ... when the process is killed

    monkeypatch.setattr(np, "savez", dying_savez)
    model[0].weight.data[...] = 123.0
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, model=model, opt=opt, step=2)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]  # no temporary file left behind
    fresh = make_model().double()
    assert checkpoint.load(path, model=fresh)["step"] == 1
    assert not np.any(fresh[0].weight.numpy() == 123.0)


def test_save_replaces_an_existing_file_and_needs_an_existing_folder(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, step=1)
    checkpoint.save(path, step=2)
    assert checkpoint.load(path)["step"] == 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.save(tmp_path / "missing" / "c.npz", step=1)


def test_a_truncated_file_raises_a_clear_error(tmp_path):
    model, opt = trained()
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, model=model, opt=opt)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 10):
        broken = tmp_path / f"cut{cut}.npz"
        broken.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated, corrupted, or not a checkpoint"):
            checkpoint.load(broken, model=make_model())


def test_foreign_files_raise_errors_that_say_what_they_are(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    with pytest.raises(CheckpointError, match="not a tinygen checkpoint.*weights"):
        checkpoint.load(foreign)
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(CheckpointError, match="single .npy array"):
        checkpoint.load(single)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="cannot read"):
        checkpoint.load(text)
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nothing.npz")


def test_loading_into_a_different_model_names_every_problem_and_changes_nothing(tmp_path):
    model, opt = trained()
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, model=model, opt=opt)

    other = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 1))
    other_opt = optim.Adam(other.parameters(), lr=0.5, amsgrad=True)
    before = {k: v.numpy().copy() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path, model=other, opt=other_opt)
    message = str(info.value)
    assert "'model'" in message
    assert "'0.weight' has shape (8, 4) in the file but (6, 4) in the module" in message
    assert "missing keys '3.weight', '3.bias'" in message
    assert "unexpected keys '4.weight', '4.bias'" in message
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), before[key])
    assert other_opt.param_groups[0]["lr"] == 0.5 and not other_opt.state


def test_an_optimizer_that_does_not_fit_fails_before_any_module_is_changed(tmp_path):
    model, opt = trained()
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, model=model, opt=opt)
    fresh = make_model().double()
    before = fresh[0].weight.numpy().copy()
    wrong_opt = optim.Adam(list(fresh.parameters())[:2])
    with pytest.raises(CheckpointError, match="'opt'.*parameters"):
        checkpoint.load(path, model=fresh, opt=wrong_opt)
    np.testing.assert_array_equal(fresh[0].weight.numpy(), before)


def test_missing_names_and_wrong_kinds_are_reported(tmp_path):
    model, opt = trained()
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, model=model, opt=opt, step=4)
    with pytest.raises(
        CheckpointError, match="no entry named 'generator'.*'model', 'opt', 'step'"
    ):
        checkpoint.load(path, generator=make_model())
    with pytest.raises(CheckpointError, match="'opt' .* is a saved optimizer, but a Sequential"):
        checkpoint.load(path, opt=make_model())


def test_not_strict_loading_skips_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "ckpt.npz"
    source = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    checkpoint.save(path, model=source)
    target = nn.Sequential(nn.Linear(2, 2))
    checkpoint.load(path, strict=False, model=target)
    np.testing.assert_array_equal(target[0].weight.numpy(), source[0].weight.numpy())


def test_values_a_checkpoint_cannot_hold_are_refused(tmp_path):
    with pytest.raises(TypeError, match="'callback' is a function"):
        checkpoint.save(tmp_path / "c.npz", callback=lambda: None)
    with pytest.raises(ValueError, match="may not contain '/'"):
        checkpoint.save(tmp_path / "c.npz", **{"a/b": 1})
    assert not list(tmp_path.iterdir())


@pytest.mark.gpu
def test_a_gpu_checkpoint_loads_on_the_cpu_and_back(tmp_path):
    from tinygen import backend

    if not backend.gpu_available():
        pytest.skip(f"no GPU: {backend.cupy_unavailable_reason()}")
    model, opt = trained()  # Adam's state lives on the CPU ...
    model.to("cuda")  # ... until the next step, which moves it beside its parameter
    opt.zero_grad()
    model(tg.randn(16, 4, dtype=np.float64, device="cuda")).sum().backward()
    opt.step()
    assert all(
        backend.device_of(v) == "cuda" for s in opt.state.values() for v in s.values()
        if hasattr(v, "shape")
    )  # fmt: skip
    path = tmp_path / "gpu.npz"
    checkpoint.save(path, model=model, opt=opt)
    cpu_model = make_model().double()
    checkpoint.load(path, model=cpu_model)
    for (key, a), b in zip(model.state_dict().items(), cpu_model.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=key)
    gpu_model = make_model().double().to("cuda")
    gpu_opt = optim.Adam(gpu_model.parameters(), lr=1e-2, amsgrad=True)
    checkpoint.load(path, model=gpu_model, opt=gpu_opt)
    assert all(p.device == "cuda" for p in gpu_model.parameters())
    assert all(
        backend.device_of(v) == "cuda" for s in gpu_opt.state.values() for v in s.values()
        if hasattr(v, "shape")
    )  # fmt: skip
