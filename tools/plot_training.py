#!/usr/bin/env python3
"""Plot loss curves from `gpt2 train --log-json` files into a PNG.

    python3 -m venv .venv && .venv/bin/pip install -r tools/requirements-plot.txt
    .venv/bin/python tools/plot_training.py --out docs/training.png \\
        "fine-tuning the fixture model=tune.jsonl" "from scratch=scratch.jsonl"

Each argument is LABEL=FILE (or just FILE). A log holds one JSON object per line: per step
{"step", "loss", "lr", "grad_norm", "tokens_per_s"}, and per evaluation {"step", "val_loss"}.
The training loss is drawn per step (thin) and as a 20-step moving average; validation losses
as dots. One panel per log.
"""

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    steps, losses, val_steps, val_losses = [], [], [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if "val_loss" in rec:
                val_steps.append(rec["step"] + 1)
                val_losses.append(rec["val_loss"])
            elif "loss" in rec:
                steps.append(rec["step"] + 1)
                losses.append(rec["loss"])
    return steps, losses, val_steps, val_losses


def moving_average(values, n):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= n:
            total -= values[i - n]
        out.append(total / min(i + 1, n))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", help="LABEL=FILE or FILE")
    ap.add_argument("--out", required=True, help="the PNG to write")
    args = ap.parse_args()
    fig, axes = plt.subplots(1, len(args.logs), figsize=(5.5 * len(args.logs), 3.8), squeeze=False)
    for ax, spec in zip(axes[0], args.logs):
        label, _, path = spec.rpartition("=")
        label = label or path
        steps, losses, val_steps, val_losses = read(path)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8)
        ax.plot(steps, moving_average(losses, 20), color="tab:blue", label="training (20-step mean)")
        if val_steps:
            ax.plot(val_steps, val_losses, "o-", color="tab:orange", markersize=4, label="validation")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
