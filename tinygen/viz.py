"""Pictures for learners and for training runs: image grids, loss curves, the graph, the trace.

Four tools, none of which prints anything on its own:

    make_grid(images, value_range=(-1, 1))       a batch (N, C, H, W) tiled into one uint8 image
    save_grid(images, path, value_range=(0, 1))  the same, written as a PNG (atomically)
    save_curves(path, {"D": [(step, loss), ...]}) loss curves drawn with Pillow alone
    draw_graph(y) / graph_text_tree(y)           the graph that computed y, as Graphviz DOT text
                                                 (an image when the `dot` program is installed)
                                                 or as an indented text tree
    with trace_backward() as trace: ...          each Function's backward, in the order it ran,
                                                 with the norms of the gradients it passed on

The value range of an image grid is always explicit: a generator ending in tanh gives images in
[-1, 1], a VAE decoder's sigmoid gives [0, 1], and guessing the range from the data hides exactly
the bugs that a picture should reveal (a saturated generator, a decoder stuck at grey).

Notation: N images, C channels (1 or 3), H rows, W columns; the grid has `nrow` images per row.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import subprocess
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinygen import backend
from tinygen.autograd import Function, Tensor, observe_backward, topological_order

__all__ = [
    "make_grid",
    "save_grid",
    "save_curves",
    "draw_graph",
    "graph_text_tree",
    "trace_backward",
    "BackwardTrace",
    "TraceStep",
]


# ---------------------------------------------------------------------------
# Image grids
# ---------------------------------------------------------------------------


def make_grid(
    images: Any,
    nrow: int = 8,
    *,
    value_range: tuple[float, float],
    padding: int = 2,
    pad_value: float | None = None,
) -> np.ndarray:
    """Tile a batch of images into one uint8 picture.

    Args:
        images: (N, C, H, W) with C in {1, 3}, or (N, H, W) for one channel; a numpy array,
            a cupy array or a Tensor.
        nrow: images per row of the grid.
        value_range: (lo, hi), the values that become black (0) and white (255). Required:
            (-1, 1) for a tanh output, (0, 1) for probabilities. Values outside are clipped,
            NaN becomes black.
        padding: pixels of border between and around the images.
        pad_value: the border's value, in the same units as the images; None means `lo`
            (black), as in torchvision.

    Returns:
        uint8 array (GH, GW) for one channel or (GH, GW, 3) for three, where
        GH = rows * (H + padding) + padding and GW = ncol * (W + padding) + padding,
        rows = ceil(N / nrow), ncol = min(N, nrow).
    """
    x = _to_numpy(images, "make_grid")
    if x.ndim == 3:
        x = x[:, None]  # (N, 1, H, W)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(
            f"make_grid: images must have shape (N, C, H, W) with N >= 1 and C in (1, 3), "
            f"or (N, H, W); got shape {x.shape}"
        )
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"make_grid: nrow must be a positive int, got {nrow!r}")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"make_grid: padding must be an int >= 0, got {padding!r}")
    lo, hi = _check_range(value_range, "make_grid")

    N, C, H, W = x.shape
    ncol = min(N, nrow)
    rows = math.ceil(N / nrow)
    GH = rows * (H + padding) + padding
    GW = ncol * (W + padding) + padding

    grid = np.full((C, GH, GW), lo if pad_value is None else pad_value, dtype=np.float64)
    for n in range(N):
        r, c = divmod(n, nrow)
        top = padding + r * (H + padding)
        left = padding + c * (W + padding)
        grid[:, top : top + H, left : left + W] = x[n]

    # pixel = round(255 * clip((value - lo) / (hi - lo), 0, 1))
    scaled = np.clip((grid - lo) / (hi - lo), 0.0, 1.0)
    scaled = np.nan_to_num(scaled, nan=0.0)
    pixels = np.rint(scaled * 255.0).astype(np.uint8)  # (C, GH, GW)
    if C == 1:
        return pixels[0]  # (GH, GW)
    return pixels.transpose(1, 2, 0).copy()  # (GH, GW, 3)


def save_grid(
    images: Any,
    path: str | os.PathLike,
    nrow: int = 8,
    *,
    value_range: tuple[float, float],
    padding: int = 2,
    pad_value: float | None = None,
    scale: int = 1,
) -> Path:
    """Write `make_grid(images, ...)` to `path` as a PNG and return the path.

    The file is written to a temporary name in the same folder and then renamed, so a reader
    never sees half a picture; the folder is created when missing. `scale` enlarges each pixel
    to scale x scale (nearest neighbour), handy for 28 x 28 images.
    """
    from PIL import Image

    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"save_grid: scale must be a positive int, got {scale!r}")
    pixels = make_grid(images, nrow, value_range=value_range, padding=padding, pad_value=pad_value)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)  # (GH*s, GW*s[, 3])
    image = Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")
    return _atomic_save(image, Path(path))


# ---------------------------------------------------------------------------
# Loss curves
# ---------------------------------------------------------------------------

# Distinguishable colours (the Okabe-Ito palette, readable by colour-blind readers).
_COLOURS = [
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (0, 0, 0),
    (240, 228, 66),
]


def save_curves(
    path: str | os.PathLike,
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str = "",
    *,
    xlabel: str = "step",
    ylabel: str = "",
    width: int = 720,
    height: int = 420,
) -> Path:
    """Draw one line per named series of (step, value) points and write a PNG.

    Drawn with Pillow alone (no matplotlib in the library): axes with round-number ticks, one
    coloured line per series, a legend in the corner that hides the fewest points. Non-finite
    values (a NaN loss) break the line instead of ruining the scale. Written atomically like
    `save_grid`.
    """
    from PIL import Image, ImageDraw

    if not isinstance(series, Mapping) or not series:
        raise ValueError("save_curves: series must be a non-empty dict {name: [(step, value)]}")
    points: dict[str, np.ndarray] = {}
    for name, pts in series.items():
        arr = np.asarray(list(pts), dtype=np.float64).reshape(-1, 2)  # (P, 2): step, value
        points[str(name)] = arr
    finite = np.concatenate([a[np.isfinite(a).all(axis=1)] for a in points.values()])
    if finite.size == 0:
        x_lo, x_hi, y_lo, y_hi = 0.0, 1.0, 0.0, 1.0
    else:
        x_lo, x_hi = float(finite[:, 0].min()), float(finite[:, 0].max())
        y_lo, y_hi = float(finite[:, 1].min()), float(finite[:, 1].max())
    x_ticks = _nice_ticks(x_lo, x_hi)
    margin = 0.05 * (y_hi - y_lo)  # keep the lines off the frame
    y_ticks = _nice_ticks(y_lo - margin, y_hi + margin)
    x_lo, x_hi = min(x_lo, x_ticks[0]), max(x_hi, x_ticks[-1])
    y_lo, y_hi = min(y_lo, y_ticks[0]), max(y_hi, y_ticks[-1])

    font = _font(13)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 78, width - 20, 36 if title else 16, height - 46

    def to_px(x: float, y: float) -> tuple[float, float]:
        # linear maps: [x_lo, x_hi] -> [left, right], [y_lo, y_hi] -> [bottom, top]
        px = left + (x - x_lo) / (x_hi - x_lo) * (right - left)
        py = bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)
        return px, py

    # grid lines, ticks and their labels
    for t in x_ticks:
        px, _ = to_px(t, y_lo)
        draw.line([(px, top), (px, bottom)], fill=(230, 230, 230))
        label = _format_tick(t)
        draw.text((px - _text_width(draw, label, font) / 2, bottom + 6), label, "black", font)
    for t in y_ticks:
        _, py = to_px(x_lo, t)
        draw.line([(left, py), (right, py)], fill=(230, 230, 230))
        label = _format_tick(t)
        draw.text((left - 6 - _text_width(draw, label, font), py - 7), label, "black", font)
    draw.rectangle([left, top, right, bottom], outline="black")
    if title:
        draw.text((left, 10), title, "black", font)
    if xlabel:
        w = _text_width(draw, xlabel, font)
        draw.text(((left + right - w) / 2, height - 22), xlabel, "black", font)
    if ylabel:  # written on its own strip, turned a quarter turn, pasted left of the axis
        w = int(_text_width(draw, ylabel, font)) + 4
        strip = Image.new("RGB", (w, 18), "white")
        ImageDraw.Draw(strip).text((2, 1), ylabel, "black", font)
        strip = strip.rotate(90, expand=True)  # (18, w)
        image.paste(strip, (4, int((top + bottom - w) / 2)))

    # the lines, broken at non-finite values
    for i, (_name, arr) in enumerate(points.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        segment: list[tuple[float, float]] = []
        for x, y in arr:
            if np.isfinite(x) and np.isfinite(y):
                segment.append(to_px(x, y))
                continue
            _draw_segment(draw, segment, colour)
            segment = []
        _draw_segment(draw, segment, colour)

    # the legend
    names = list(points)
    box_w = 34 + max(_text_width(draw, n, font) for n in names)
    box_h = 8 + 18 * len(names)
    # the corner whose box hides the fewest data points (top right on a tie)
    pixels = np.array([to_px(x, y) for x, y in finite]) if finite.size else np.zeros((0, 2))
    corners = [
        (right - box_w - 8, top + 8),
        (left + 8, top + 8),
        (right - box_w - 8, bottom - box_h - 8),
        (left + 8, bottom - box_h - 8),
    ]

    def hidden(corner: tuple[float, float]) -> int:
        cx, cy = corner
        inside = (
            (pixels[:, 0] >= cx)
            & (pixels[:, 0] <= cx + box_w)
            & (pixels[:, 1] >= cy)
            & (pixels[:, 1] <= cy + box_h)
        )
        return int(inside.sum())

    x0, y0 = min(corners, key=hidden)
    draw.rectangle([x0, y0, x0 + box_w, y0 + box_h], fill="white", outline=(160, 160, 160))
    for i, name in enumerate(names):
        y = y0 + 6 + 18 * i
        draw.line([(x0 + 6, y + 7), (x0 + 26, y + 7)], fill=_COLOURS[i % len(_COLOURS)], width=3)
        draw.text((x0 + 30, y), name, "black", font)

    return _atomic_save(image, Path(path))


# ---------------------------------------------------------------------------
# The graph: DOT text, an image when Graphviz is installed, a text tree otherwise
# ---------------------------------------------------------------------------


def draw_graph(
    tensor: Tensor,
    path: str | os.PathLike | None = None,
    *,
    names: Mapping[str, Tensor] | None = None,
) -> str:
    """The graph that computed `tensor`, as Graphviz DOT text (returned).

    Tensors are ellipses labelled with their name (from `names`, e.g. {"x": x, "w": w}),
    shape and dtype (and value, when they hold one number); Functions are boxes labelled with
    their class name. Leaves that require grad are filled blue.

    With `path`: a name ending in .dot gets the text itself; .png, .svg or .pdf is rendered by
    the Graphviz `dot` program. When `dot` is not installed, nothing is rendered: a warning
    says how to install it and points to `graph_text_tree(tensor)`, and the DOT text is still
    returned (paste it into any Graphviz viewer).

    Draw the graph before `backward()`: backward frees it unless `retain_graph=True`.
    """
    functions, tensors, edges = _walk_graph(tensor, "draw_graph")
    label_of = _names_by_id(names)
    lines = [
        "digraph tinygen {",
        "  rankdir=BT;",
        '  node [fontname="Helvetica", fontsize=11];',
    ]
    for key, t in tensors.items():
        style = ', style=filled, fillcolor="#cfe2f3"' if t.is_leaf and t.requires_grad else ""
        lines.append(f'  {key} [shape=ellipse, label="{_tensor_label(t, label_of)}"{style}];')
    for key, fn in functions.items():
        lines.append(
            f'  {key} [shape=box, style="rounded,filled", fillcolor="#fde9d9", '
            f'label="{type(fn).__name__}"];'
        )
    lines += [f"  {a} -> {b};" for a, b in edges]
    lines.append("}")
    text = "\n".join(lines) + "\n"

    if path is not None:
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if fmt == "dot":
            _atomic_write_bytes(text.encode(), path)
        elif fmt not in ("png", "svg", "pdf"):
            raise ValueError(
                f"draw_graph: path must end in .dot, .png, .svg or .pdf, got {str(path)!r}"
            )
        elif shutil.which("dot") is None:
            warnings.warn(
                "draw_graph: the Graphviz program `dot` is not installed, so no image was "
                f"written to {str(path)!r}. Install Graphviz (e.g. `apt-get install graphviz` "
                "or `brew install graphviz`), or read the graph as text with "
                "tinygen.viz.graph_text_tree(tensor); the returned DOT text can also be pasted "
                "into any Graphviz viewer.",
                stacklevel=2,
            )
        else:
            _render_dot(text, path, fmt)
    return text


def graph_text_tree(tensor: Tensor, *, names: Mapping[str, Tensor] | None = None) -> str:
    """The graph that computed `tensor` as an indented tree, read from the output down.

    Each tensor line shows its name (from `names`), shape and dtype; under it, the Function
    that made it and that Function's inputs. A subgraph reached a second time is written once
    and then referred to as "(shown above)".
    """
    _walk_graph(tensor, "graph_text_tree")  # raises if the graph was freed
    label_of = _names_by_id(names)
    out: list[str] = []
    shown: set[int] = set()
    # explicit stack of (tensor, prefix for its line, prefix for its children): no recursion,
    # so a graph thousands of operations deep works
    stack: list[tuple[Tensor, str, str]] = [(tensor, "", "")]
    while stack:
        t, line_prefix, child_prefix = stack.pop()
        label = _tensor_label(t, label_of).replace("\\n", " ")
        fn = t.creator
        if fn is None:
            kind = "leaf, requires grad" if t.requires_grad else "constant"
            out.append(f"{line_prefix}{label}  [{kind}]")
            continue
        if id(t) in shown:
            out.append(f"{line_prefix}{label}  <- {type(fn).__name__} (shown above)")
            continue
        shown.add(id(t))
        out.append(f"{line_prefix}{label}  <- {type(fn).__name__}")
        inputs = list(fn.inputs or ())
        children = []
        for i, x in enumerate(inputs):
            last = i == len(inputs) - 1
            children.append(
                (
                    x,
                    child_prefix + ("└─ " if last else "├─ "),
                    child_prefix + ("   " if last else "│  "),
                )
            )
        stack.extend(reversed(children))
    return "\n".join(out)


# ---------------------------------------------------------------------------
# The backward trace
# ---------------------------------------------------------------------------


@dataclass
class TraceStep:
    """One Function's backward: what it received and what it passed on.

    name: the Function's class name; output_shape: the shape of its output (and of gy);
    gy_norm: the L2 norm of the gradient it received; input_shapes and grad_norms: one entry
    per input, the norm of the gradient passed to it (None when no gradient was passed).
    """

    name: str
    output_shape: tuple[int, ...]
    gy_norm: float
    input_shapes: tuple[tuple[int, ...], ...]
    grad_norms: tuple[float | None, ...]


@dataclass
class BackwardTrace:
    """The steps of every backward pass run inside `trace_backward()`, in order."""

    steps: list[TraceStep] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[TraceStep]:
        return iter(self.steps)

    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def report(self) -> str:
        """A table, one line per step: Function, output shape, |gy|, and each |gx| passed on."""
        header = f"{'#':>3}  {'function':<14} {'output shape':<16} {'|gy|':>10}   |gx| per input"
        lines = [header, "-" * len(header)]
        for i, s in enumerate(self.steps):
            passed = ", ".join(
                f"{shape}: {'-' if g is None else f'{g:.4g}'}"
                for shape, g in zip(s.input_shapes, s.grad_norms)
            )
            lines.append(
                f"{i:>3}  {s.name:<14} {str(s.output_shape):<16} {s.gy_norm:>10.4g}   {passed}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


@contextlib.contextmanager
def trace_backward(print_trace: bool = False) -> Iterator[BackwardTrace]:
    """Record each Function's backward that runs inside the block, in the order it runs.

        with trace_backward() as trace:
            loss.backward()
        print(trace.report())

    With `print_trace=True` the report is printed when the block ends (for notebooks and
    scripts; the library prints nothing otherwise). The trace observes; it changes nothing
    that backward computes. It stores names, shapes and norms, never the tensors themselves,
    so it keeps no graph alive.
    """
    trace = BackwardTrace()

    def record(fn: Function, gy: Tensor, gxs: tuple[Tensor | None, ...]) -> None:
        inputs = fn.inputs or ()
        trace.steps.append(
            TraceStep(
                name=type(fn).__name__,
                output_shape=tuple(gy.shape),
                gy_norm=_l2_norm(gy),
                input_shapes=tuple(tuple(x.shape) for x in inputs),
                grad_norms=tuple(None if g is None else _l2_norm(g) for g in gxs),
            )
        )

    with observe_backward(record):
        yield trace
    if print_trace:
        print(trace.report())


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _to_numpy(images: Any, caller: str) -> np.ndarray:
    if isinstance(images, Tensor):
        return images.numpy()
    if backend.is_cupy_array(images):
        return backend.to_device(images, "cpu")
    if isinstance(images, np.ndarray):
        return images
    raise TypeError(f"{caller}: images must be a Tensor or an array, got {type(images).__name__}")


def _check_range(value_range: Any, caller: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise TypeError(
            f"{caller}: value_range must be a pair (lo, hi), e.g. (-1, 1) for tanh outputs "
            f"or (0, 1) for probabilities; got {value_range!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{caller}: value_range needs finite lo < hi, got ({lo}, {hi})")
    return lo, hi


def _atomic_save(image: Any, path: Path) -> Path:
    """Save a PIL image as PNG to a temporary file beside `path`, then rename it over `path`."""
    return _atomic_write(path, lambda f: image.save(f, format="PNG"))


def _atomic_write_bytes(data: bytes, path: Path) -> Path:
    return _atomic_write(path, lambda f: f.write(data))


def _atomic_write(path: Path, write: Any) -> Path:
    """Call write(file) on a new temporary file beside `path`, then rename it over `path`.

    A reader sees the old file or the whole new one, never half of it; on failure the temporary
    file is removed. The file gets the usual permissions (0o666 less the umask), which
    tempfile.mkstemp's private 0o600 would not give.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _new_temporary(path: Path) -> tuple[int, str]:
    """Create and open a fresh file `.NAME.<random>.tmp` in the folder of `path`."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {str(path)!r}")


def _render_dot(text: str, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temporary(path)
    os.close(fd)
    try:
        result = subprocess.run(
            ["dot", f"-T{fmt}", "-o", tmp], input=text.encode(), capture_output=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"draw_graph: Graphviz `dot -T{fmt}` failed with code {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _walk_graph(
    root: Tensor, caller: str
) -> tuple[dict[str, Function], dict[str, Tensor], list[tuple[str, str]]]:
    """Number the Functions and tensors of the graph of `root` and list its edges.

    Returns ({"f0": fn, ...}, {"t0": tensor, ...}, [(from, to), ...]) with edges running
    input tensor -> Function -> output tensor. A Function holds its inputs but not its output;
    the output is `root` or an input of a later Function (whose `creator` is the Function).
    """
    if not isinstance(root, Tensor):
        raise TypeError(f"{caller}: expected a Tensor, got {type(root).__name__}")
    order = topological_order(root)  # outputs first
    fn_key = {id(fn): f"f{i}" for i, fn in enumerate(order)}
    functions = {fn_key[id(fn)]: fn for fn in order}
    tensors: dict[str, Tensor] = {}
    t_key: dict[int, str] = {}

    def key_of(t: Tensor) -> str:
        if id(t) not in t_key:
            t_key[id(t)] = f"t{len(t_key)}"
            tensors[t_key[id(t)]] = t
        return t_key[id(t)]

    edges: list[tuple[str, str]] = []
    made: set[int] = set()  # tensors whose Function -> tensor edge is listed
    if root.creator is not None:
        edges.append((fn_key[id(root.creator)], key_of(root)))
        made.add(id(root))
    else:
        key_of(root)
    for fn in order:
        if fn.inputs is None:
            raise ValueError(
                f"{caller}: the graph through {type(fn).__name__} was freed by backward(); "
                "draw it before calling backward, or call backward(retain_graph=True)"
            )
        for x in fn.inputs:
            edges.append((key_of(x), fn_key[id(fn)]))
            if x.creator is not None and id(x) not in made:
                edges.append((fn_key[id(x.creator)], key_of(x)))
                made.add(id(x))
    return functions, tensors, edges


def _names_by_id(names: Mapping[str, Tensor] | None) -> dict[int, str]:
    if names is None:
        return {}
    return {id(t): str(name) for name, t in names.items()}


def _tensor_label(t: Tensor, label_of: dict[int, str]) -> str:
    parts = []
    if id(t) in label_of:
        parts.append(label_of[id(t)])
    parts.append(f"{t.shape} {t.dtype}")
    if t.size == 1:
        parts.append(f"= {float(backend.to_device(t.data, 'cpu').reshape(())):.4g}")
    return "\\n".join(p.replace('"', "'") for p in parts)


def _l2_norm(t: Tensor) -> float:
    """sqrt(sum of squares), accumulated in float64."""
    data = backend.to_device(t.data, "cpu").astype(np.float64, copy=False)
    return float(np.sqrt(np.sum(data * data)))


def _nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round-number ticks covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / (count - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    last = math.ceil(hi / step) * step
    n = int(round((last - first) / step))
    return [first + i * step for i in range(n + 1)]


def _format_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.6g}"


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


def _text_width(draw: Any, text: str, font: Any) -> float:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _draw_segment(draw: Any, segment: list[tuple[float, float]], colour: tuple) -> None:
    if len(segment) >= 2:
        draw.line(segment, fill=colour, width=2, joint="curve")
    elif len(segment) == 1:
        x, y = segment[0]
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
