"""`make demo`: a short tour that runs end to end and writes its results to a folder.

For now it shows the autograd engine on a small problem: it fits a line by
gradient descent, checks one gradient numerically, and writes a summary.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

import tinygen as tg


def fit_a_line(steps: int = 200, lr: float = 0.1) -> dict:
    """Recover y = 3x - 1 from noisy samples with plain gradient descent."""
    tg.manual_seed(0)
    x = tg.rand(64, 1)
    y = 3 * x - 1 + 0.01 * tg.randn(64, 1)
    w = tg.zeros(1, 1, requires_grad=True)
    b = tg.zeros(1, requires_grad=True)
    for _ in range(steps):
        loss = ((x @ w + b - y) ** 2).mean()
        w.grad = b.grad = None  # gradients accumulate: clear them each step
        loss.backward()
        with tg.no_grad():
            w.data -= lr * w.grad.data
            b.data -= lr * b.grad.data
    return {"w": float(w.item()), "b": float(b.item()), "loss": float(loss.item())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="folder for the results")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    line = fit_a_line()
    print(
        f"fitted y = {line['w']:.3f} x + {line['b']:.3f} (true: 3 x - 1), loss {line['loss']:.5f}"
    )

    x = tg.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    tg.gradcheck(lambda x: (x.tanh() * x).sum(axis=1), [x])
    print("gradcheck of tanh(x) * x summed over rows: passed")

    summary = out / "summary.json"
    tmp = summary.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"line": line}, indent=2))
    os.replace(tmp, summary)
    print(f"wrote {summary}")


if __name__ == "__main__":
    main()
