"""Checkpoints: save and restore models, optimizers and plain values in one .npz file.

    checkpoint.save("run/ckpt.npz", generator=G, discriminator=D, opt_g=opt_g, opt_d=opt_d,
                    step=step, epoch=epoch, rng=tinygen.get_rng_state())
    values = checkpoint.load("run/ckpt.npz", generator=G, discriminator=D,
                             opt_g=opt_g, opt_d=opt_d)
    step, epoch = values["step"], values["epoch"]
    tinygen.set_rng_state(values["rng"])

What is stored, by name:

- a Module: its state_dict, one array per key ("generator/0.weight", ...);
- an Optimizer: its state arrays ("opt_g/state/3/exp_avg", ...), with its
  step counts and hyperparameters in the manifest;
- a Tensor or an array: the array;
- anything else JSON can write (numbers, strings, lists, dicts, None): in the
  manifest, the JSON text kept under "__tinygen_checkpoint__".

Nothing is pickled, so loading never runs code from the file.

Saving is atomic: the file is written under a temporary name in the same
folder, flushed to disk, then renamed over the target (os.replace, atomic on
POSIX and Windows). A save that dies half-way leaves the previous checkpoint
as it was. Loading checks everything it can before it changes anything, and
names every missing, unexpected or mis-shaped entry.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tinygen import backend
from tinygen.autograd import Tensor
from tinygen.nn.module import Module
from tinygen.optim import Optimizer

MANIFEST_KEY = "__tinygen_checkpoint__"
FORMAT = "tinygen-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or does not fit what it is loaded into."""


def save(path: str | os.PathLike, **things: Any) -> None:
    """Write modules, optimizers and values, by keyword name, to one .npz at `path`, atomically."""
    arrays: dict[str, np.ndarray] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name, thing in things.items():
        if "/" in name or name == MANIFEST_KEY:
            raise ValueError(f"checkpoint.save: name {name!r} may not contain '/'")
        if isinstance(thing, Module):
            entries[name] = {"kind": "module"}
            for key, tensor in thing.state_dict().items():
                arrays[f"{name}/{key}"] = _host(tensor.data)
        elif isinstance(thing, Optimizer):
            state = thing.state_dict()
            scalars: dict[str, dict[str, Any]] = {}
            for index, values in state["state"].items():
                for key, value in values.items():
                    if hasattr(value, "shape") and np.ndim(value) > 0:
                        arrays[f"{name}/state/{index}/{key}"] = _host(value)
                    else:
                        scalars.setdefault(str(index), {})[key] = _plain(value)
            groups = [{k: _plain(v) for k, v in g.items()} for g in state["param_groups"]]
            entries[name] = {"kind": "optimizer", "param_groups": groups, "scalars": scalars}
        elif isinstance(thing, (Tensor, np.ndarray)) or backend.is_cupy_array(thing):
            arrays[name] = _host(thing.data if isinstance(thing, Tensor) else thing)
            entries[name] = {"kind": "tensor" if isinstance(thing, Tensor) else "array"}
        else:
            value = _plain(thing)
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"checkpoint.save: {name!r} is a {type(thing).__name__}, which a checkpoint "
                    "cannot hold; use Modules, Optimizers, Tensors, arrays, or numbers, strings, "
                    "lists and dicts"
                ) from None
            entries[name] = {"kind": "value", "value": value}
    manifest = {"format": FORMAT, "version": VERSION, "entries": entries}
    arrays[MANIFEST_KEY] = np.array(json.dumps(manifest))
    _write_atomically(Path(path), arrays)


def load(path: str | os.PathLike, strict: bool = True, **targets: Any) -> dict[str, Any]:
    """Load the entries named by the keywords into those modules and optimizers.

    Returns every entry of the file that was not loaded into a target: plain
    values as they were saved, Tensors and arrays as numpy arrays, modules
    as state dicts (name -> array), optimizers as state dicts.

    Raises CheckpointError naming the problem: the file is truncated or not a
    tinygen checkpoint; a target's name is not in the file; a module's keys
    are missing, unexpected (strict=True) or mis-shaped.
    """
    path = Path(path)
    arrays, manifest = _read(path)
    entries = manifest["entries"]
    missing = [name for name in targets if name not in entries]
    if missing:
        raise CheckpointError(
            f"checkpoint.load: {path} has no entry named {', '.join(map(repr, missing))}; "
            f"it holds {', '.join(map(repr, entries)) or 'nothing'}"
        )
    contents = {name: _entry(name, info, arrays) for name, info in entries.items()}

    # Check every target before changing any, so that a failure leaves them all untouched.
    for name, target in targets.items():
        kind = entries[name]["kind"]
        if isinstance(target, Module) and kind == "module":
            _check_module(path, name, target, contents[name], strict)
        elif isinstance(target, Optimizer) and kind == "optimizer":
            _check_optimizer(path, name, target, contents[name])
        else:
            raise CheckpointError(
                f"checkpoint.load: {name!r} in {path} is a saved {kind}, but a "
                f"{type(target).__name__} was given to load it into"
            )
    for name, target in targets.items():
        try:
            if isinstance(target, Module):
                target.load_state_dict(contents[name], strict=strict)
            else:
                target.load_state_dict(contents[name])
        except ValueError as error:
            raise CheckpointError(f"checkpoint.load: {name!r} in {path}: {error}") from None
    return {name: value for name, value in contents.items() if name not in targets}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _host(array: Any) -> np.ndarray:
    return np.array(backend.to_device(array, "cpu"))  # a copy, on the host


def _plain(value: Any) -> Any:
    """numpy scalars and tuples as the Python values JSON writes."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint.save: folder {folder} does not exist")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX); not possible on every platform
        directory = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)


_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError)


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every array in the file and the manifest, or a CheckpointError saying what is wrong."""
    if not path.exists():
        raise FileNotFoundError(f"checkpoint.load: no file at {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CheckpointError(
                f"checkpoint.load: {path} holds a single .npy array, not a tinygen checkpoint"
            )
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except CheckpointError:
        raise
    except _READ_ERRORS as error:
        raise CheckpointError(
            f"checkpoint.load: cannot read {path} as an .npz archive "
            f"({type(error).__name__}: {error}); the file is truncated, corrupted, or not "
            "a checkpoint"
        ) from None
    if MANIFEST_KEY not in arrays:
        shown = ", ".join(sorted(arrays)[:5])
        raise CheckpointError(
            f"checkpoint.load: {path} is an .npz archive but not a tinygen checkpoint (it has "
            f"no {MANIFEST_KEY!r} entry; its first entries are: {shown or 'none'})"
        )
    try:
        manifest = json.loads(str(arrays.pop(MANIFEST_KEY)))
        ok = manifest.get("format") == FORMAT and isinstance(manifest.get("entries"), dict)
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise CheckpointError(f"checkpoint.load: {path} has a damaged manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint.load: {path} is format version {manifest.get('version')}, this "
            f"tinygen reads version {VERSION}"
        )
    return arrays, manifest


def _entry(name: str, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    """One entry of the file as it is handed to load_state_dict or returned."""
    kind = info["kind"]
    if kind == "module":
        prefix = name + "/"
        return {key[len(prefix) :]: a for key, a in arrays.items() if key.startswith(prefix)}
    if kind == "optimizer":
        prefix = name + "/state/"
        state: dict[int, dict[str, Any]] = {}
        for index, scalars in info["scalars"].items():
            state.setdefault(int(index), {}).update(scalars)
        for key, array in arrays.items():
            if key.startswith(prefix):
                index, _, field = key[len(prefix) :].partition("/")
                state.setdefault(int(index), {})[field] = array
        return {"state": state, "param_groups": info["param_groups"]}
    if kind in ("tensor", "array"):
        return arrays[name]
    return info["value"]


def _check_optimizer(path: Path, name: str, optimizer: Optimizer, state: dict) -> None:
    """Load into a shallow copy: it raises on a mismatch and leaves `optimizer` as it was."""
    trial = copy.copy(optimizer)
    trial.param_groups = [dict(group) for group in optimizer.param_groups]
    try:
        trial.load_state_dict(state)
    except ValueError as error:
        raise CheckpointError(f"checkpoint.load: {name!r} in {path}: {error}") from None


def _check_module(
    path: Path, name: str, module: Module, state: dict[str, np.ndarray], strict: bool
) -> None:
    """Name every missing, unexpected or mis-shaped key before anything is loaded."""
    own = module.state_dict()
    problems = []
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if strict and missing:
        problems.append("missing keys " + ", ".join(map(repr, missing)))
    if strict and unexpected:
        problems.append("unexpected keys " + ", ".join(map(repr, unexpected)))
    for key, tensor in own.items():
        if key in state and tuple(state[key].shape) != tensor.shape:
            problems.append(
                f"{key!r} has shape {tuple(state[key].shape)} in the file but {tensor.shape} "
                "in the module"
            )
    if problems:
        raise CheckpointError(
            f"checkpoint.load: {name!r} in {path} does not fit the {type(module).__name__} "
            "given: " + "; ".join(problems)
        )
