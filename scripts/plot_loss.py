"""Plot train and val loss curves from `pgolf-rt train` / train_gpt.py / scripts/torch_train.py
logs (lines `step:N/M train_loss:X ...` and `step:N/M val_loss:X val_bpb:Y ...`).

    venv/bin/python scripts/plot_loss.py --out curve.png LABEL=run1.log LABEL=run2.log
Needs matplotlib (`venv/bin/pip install matplotlib`)."""

import argparse
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TRAIN = re.compile(r"^step:(\d+)/\d+ train_loss:([\d.]+)")
VAL = re.compile(r"^step:(\d+)/\d+ val_loss:([\d.]+) val_bpb:([\d.]+)")


def parse(path):
    train, val = [], []
    for line in open(path):
        if m := TRAIN.match(line):
            train.append((int(m[1]), float(m[2])))
        elif m := VAL.match(line):
            val.append((int(m[1]), float(m[2])))
    return train, val


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="training loss")
    ap.add_argument("runs", nargs="+", help="LABEL=LOGFILE")
    a = ap.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for i, run in enumerate(a.runs):
        label, path = run.split("=", 1)
        train, val = parse(path)
        c = f"C{i}"
        if train:
            ax.plot(*zip(*train), color=c, lw=1.2, label=f"{label} train")
        if val:
            ax.plot(*zip(*val), color=c, lw=0, marker="o", ms=5, label=f"{label} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(a.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
