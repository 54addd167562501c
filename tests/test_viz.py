"""Tests for tinygen/viz.py: image grids, loss curves, the graph as DOT text, the trace."""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import tinygen as tg
from tinygen import viz
from tinygen.autograd import topological_order

# ---------------------------------------------------------------------------
# make_grid / save_grid
# ---------------------------------------------------------------------------


def test_make_grid_places_each_image_at_its_cell_with_padding():
    # 5 images of 2 x 3 pixels, image n filled with the value n / 4 in [0, 1]
    x = np.stack([np.full((1, 2, 3), n / 4) for n in range(5)])  # (5, 1, 2, 3)
    grid = viz.make_grid(x, nrow=2, value_range=(0, 1), padding=1)

    # rows = ceil(5 / 2) = 3, GH = 3 * (2 + 1) + 1 = 10, GW = 2 * (3 + 1) + 1 = 9
    assert grid.shape == (10, 9)
    assert grid.dtype == np.uint8
    for n in range(5):
        r, c = divmod(n, 2)
        top, left = 1 + r * 3, 1 + c * 4
        cell = grid[top : top + 2, left : left + 3]
        assert (cell == round(255 * n / 4)).all(), n
    # the border and the empty sixth cell are black (pad_value defaults to lo)
    mask = np.ones_like(grid, dtype=bool)
    for n in range(5):
        r, c = divmod(n, 2)
        mask[1 + r * 3 : 3 + r * 3, 1 + c * 4 : 4 + c * 4] = False
    assert (grid[mask] == 0).all()


def test_make_grid_maps_value_range_to_0_255_and_clips_outside():
    values = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 7.0, np.nan])
    x = values.reshape(1, 1, 1, -1)  # (1, 1, 1, 7)
    grid = viz.make_grid(x, value_range=(-1, 1), padding=0)
    # pixel = round(255 * clip((v + 1) / 2, 0, 1)); NaN -> 0
    expected = [0, 0, round(127.5), round(255 * 0.75), 255, 255, 0]
    assert grid.tolist() == [expected]


def test_make_grid_same_picture_for_tanh_range_and_rescaled_unit_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(6, 1, 4, 4))
    a = viz.make_grid(x, nrow=3, value_range=(-1, 1))
    b = viz.make_grid((x + 1) / 2, nrow=3, value_range=(0, 1))
    assert np.array_equal(a, b)


def test_make_grid_accepts_tensor_and_rgb():
    x = tg.tensor(np.random.default_rng(1).uniform(0, 1, size=(3, 3, 5, 5)))
    grid = viz.make_grid(x, nrow=3, value_range=(0, 1), padding=2)
    assert grid.shape == (2 + 7, 3 * 7 + 2, 3)  # (GH, GW, 3)
    np.testing.assert_array_equal(
        grid[2:7, 2:7], np.rint(x.numpy()[0].transpose(1, 2, 0) * 255).astype(np.uint8)
    )


def test_make_grid_requires_an_explicit_value_range():
    x = np.zeros((1, 1, 2, 2))
    with pytest.raises(TypeError):
        viz.make_grid(x)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="value_range"):
        viz.make_grid(x, value_range=(1, 1))
    with pytest.raises(TypeError, match="value_range"):
        viz.make_grid(x, value_range=5)


def test_make_grid_rejects_bad_shapes_naming_the_shape():
    with pytest.raises(ValueError, match=r"\(2, 2, 4, 4\)"):
        viz.make_grid(np.zeros((2, 2, 4, 4)), value_range=(0, 1))
    with pytest.raises(ValueError, match="make_grid"):
        viz.make_grid(np.zeros((4, 4)), value_range=(0, 1))


def test_save_grid_writes_the_png_of_make_grid(tmp_path):
    x = np.random.default_rng(2).uniform(-1, 1, size=(7, 1, 6, 6))
    path = viz.save_grid(x, tmp_path / "new" / "grid.png", nrow=4, value_range=(-1, 1))
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im)
    np.testing.assert_array_equal(pixels, viz.make_grid(x, nrow=4, value_range=(-1, 1)))


def test_save_grid_scale_repeats_pixels(tmp_path):
    x = np.random.default_rng(3).uniform(0, 1, size=(2, 1, 3, 3))
    path = viz.save_grid(x, tmp_path / "g.png", value_range=(0, 1), scale=3)
    with Image.open(path) as im:
        pixels = np.asarray(im)
    small = viz.make_grid(x, value_range=(0, 1))
    np.testing.assert_array_equal(pixels, small.repeat(3, axis=0).repeat(3, axis=1))


def test_save_grid_is_atomic_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "grid.png"
    x = np.zeros((1, 1, 4, 4))
    viz.save_grid(x, path, value_range=(0, 1))
    before = path.read_bytes()

    # a failure while writing leaves the old file whole and no temporary file behind
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"half a picture")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        viz.save_grid(np.ones((1, 1, 4, 4)), path, value_range=(0, 1))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["grid.png"]


def test_save_grid_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = viz.save_grid(np.zeros((1, 1, 2, 2)), tmp_path / "g.png", value_range=(0, 1))
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------
# save_curves
# ---------------------------------------------------------------------------


def test_save_curves_draws_each_series_in_its_colour(tmp_path):
    steps = np.arange(50)
    series = {
        "D loss": list(zip(steps, np.exp(-steps / 10))),
        "G loss": list(zip(steps, 1 + 0.1 * np.sin(steps))),
        "broken": [(0, 1.0), (1, float("nan")), (2, 0.5)],
    }
    path = viz.save_curves(tmp_path / "c.png", series, title="losses", ylabel="loss")
    with Image.open(path) as im:
        assert im.size == (720, 420)
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels[::1]}
    for colour in viz._COLOURS[:3]:
        assert colour in colours
    assert os.listdir(tmp_path) == ["c.png"]


def test_save_curves_rejects_empty_series(tmp_path):
    with pytest.raises(ValueError, match="save_curves"):
        viz.save_curves(tmp_path / "c.png", {})


# ---------------------------------------------------------------------------
# draw_graph / graph_text_tree
# ---------------------------------------------------------------------------


def _small_graph():
    a = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = tg.tensor([0.5, -1.0, 2.0], requires_grad=True)
    y = ((a * b).exp() + a).sum()
    return a, b, y


def test_draw_graph_dot_text_has_every_op_and_tensor():
    a, b, y = _small_graph()
    text = viz.draw_graph(y, names={"a": a, "b": b, "y": y})

    assert text.startswith("digraph")
    labels = re.findall(r'label="([^"]*)"', text)
    fn_labels = [lab for lab in labels if "(" not in lab]
    assert sorted(fn_labels) == sorted(type(f).__name__ for f in topological_order(y))
    assert sorted(fn_labels) == ["Add", "Exp", "Mul", "Sum"]
    # six tensors: a, b, a*b, exp(a*b), exp(a*b) + a, y; shapes shown
    tensor_labels = [lab for lab in labels if "(" in lab]
    assert len(tensor_labels) == 6
    assert any(lab.startswith("a\\n(3,)") for lab in tensor_labels)
    assert any(lab.startswith("y\\n()") for lab in tensor_labels)
    # edges: Mul has two inputs, Add two, Exp and Sum one, and every Function one output
    assert len(re.findall(r"-> f\d+;", text)) == 6
    assert len(re.findall(r"f\d+ -> t\d+;", text)) == 4


def test_draw_graph_writes_dot_file_and_warns_when_dot_missing(tmp_path, monkeypatch):
    _, _, y = _small_graph()
    text = viz.draw_graph(y, tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == text

    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="graph_text_tree"):
        again = viz.draw_graph(y, tmp_path / "g.png")
    assert again == text
    assert not (tmp_path / "g.png").exists()


def test_draw_graph_renders_through_dot_when_it_is_installed(tmp_path, monkeypatch):
    # a stand-in for Graphviz's `dot`: copies the DOT text it reads to the file after -o
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake_dot = fake_bin / "dot"
    fake_dot.write_text(
        f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\n"
        'assert args[0] == "-Tsvg", args\n'
        'open(args[args.index("-o") + 1], "w").write("rendered:" + sys.stdin.read())\n'
    )
    fake_dot.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin) + os.pathsep + os.environ.get("PATH", ""))
    _, _, y = _small_graph()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = viz.draw_graph(y, tmp_path / "out" / "g.svg")
    assert (tmp_path / "out" / "g.svg").read_text() == "rendered:" + text
    assert os.listdir(tmp_path / "out") == ["g.svg"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
def test_draw_graph_renders_a_png_with_graphviz(tmp_path):
    _, _, y = _small_graph()
    path = tmp_path / "g.png"
    viz.draw_graph(y, path)
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 50 and im.size[1] > 50


def test_draw_graph_refuses_a_freed_graph():
    _, _, y = _small_graph()
    y.backward()
    with pytest.raises(ValueError, match="retain_graph"):
        viz.draw_graph(y)


def test_graph_text_tree_lists_ops_from_output_to_leaves():
    a, b, y = _small_graph()
    tree = viz.graph_text_tree(y, names={"a": a, "b": b})
    lines = tree.splitlines()
    assert "<- Sum" in lines[0]
    ops = [re.search(r"<- (\w+)", line).group(1) for line in lines if "<-" in line]
    assert ops == ["Sum", "Add", "Exp", "Mul"]
    assert sum("a (3,)" in line for line in lines) == 2  # a is used twice
    assert sum("[leaf, requires grad]" in line for line in lines) == 3


def test_draw_graph_handles_a_deep_chain():
    x = tg.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0
    text = viz.draw_graph(y)
    assert text.count('label="Mul"') == 3000
    assert len(re.findall(r"f\d+ -> t\d+;", text)) == 3000


def test_graph_text_tree_handles_a_deep_chain_without_recursion():
    x = tg.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0
    tree = viz.graph_text_tree(y)
    assert tree.count("<- Mul") == 3000


# ---------------------------------------------------------------------------
# trace_backward
# ---------------------------------------------------------------------------


def test_trace_order_matches_topological_order():
    rng = np.random.default_rng(4)
    x = tg.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    w = tg.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    y = ((x @ w).tanh() * 2.0 + x.sum(axis=1, keepdims=True)).mean()
    expected = [type(f).__name__ for f in topological_order(y)]

    with viz.trace_backward() as trace:
        y.backward()
    assert trace.names() == expected
    assert trace.steps[0].output_shape == ()
    assert len(trace) == len(expected)


def test_trace_records_norms_of_the_gradients_passed_on():
    rng = np.random.default_rng(5)
    a_np, b_np = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    a = tg.tensor(a_np, requires_grad=True)
    b = tg.tensor(b_np, requires_grad=True)
    y = (a * b).sum()
    with viz.trace_backward() as trace:
        y.backward()

    sum_step, mul_step = trace.steps
    assert (sum_step.name, mul_step.name) == ("Sum", "Mul")
    # d sum / d(a*b) = ones(2, 3): norm sqrt(6)
    assert sum_step.gy_norm == pytest.approx(1.0)
    assert sum_step.grad_norms == (pytest.approx(np.sqrt(6)),)
    # d(a*b)/da = b, d(a*b)/db = a
    assert mul_step.output_shape == (2, 3)
    assert mul_step.input_shapes == ((2, 3), (2, 3))
    assert mul_step.grad_norms[0] == pytest.approx(np.linalg.norm(b_np), rel=1e-12)
    assert mul_step.grad_norms[1] == pytest.approx(np.linalg.norm(a_np), rel=1e-12)


def test_trace_does_not_change_gradients_and_report_lists_steps(capsys):
    def run(traced: bool):
        x = tg.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
        y = (x.sigmoid() * x).sum()
        if traced:
            with viz.trace_backward(print_trace=True) as trace:
                y.backward()
            return x.grad.numpy(), trace
        y.backward()
        return x.grad.numpy(), None

    plain, _ = run(False)
    traced, trace = run(True)
    np.testing.assert_array_equal(plain, traced)
    report = trace.report()
    printed = capsys.readouterr().out
    assert printed.strip() == report.strip()
    for name in ("Sum", "Mul", "Sigmoid"):
        assert name in report


def test_trace_prints_nothing_unless_asked(capsys):
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with viz.trace_backward() as trace:
            (x * x).sum().backward()
    assert capsys.readouterr().out == ""
    assert trace.names() == ["Sum", "Mul"]
