"""Figures a user would rather look at than read, drawn with matplotlib (Agg, no display):
accuracy per round (a line per model, its 95% interval as a band, a panel per task) and training
loss curves. Each is written as a PNG beside the artifacts and returned as bytes, so the Dagster
layer can embed it in markdown metadata the way Dagster's tutorial embeds plots (base64 ``img``).
"""

import base64
import io
from pathlib import Path

import pyarrow as pa

COLORS = {"base": "#7f7f7f", "sft": "#1f77b4", "ptr": "#d62728"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(figure)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def accuracy_plot(summary: pa.Table, path: Path) -> bytes:
    """Each task's primary metric (%) against refinement round, one panel per task, one line per
    model role with its 95% interval as a band (``schemas.EVAL_SUMMARY`` in). Writes ``path``;
    returns the PNG."""
    plt = _pyplot()
    rows = [r for r in summary.to_pylist() if r["primary"]]
    tasks = sorted({r["task"] for r in rows}) or ["(no scores)"]
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for role in sorted({r["model_role"] for r in rows if r["task"] == task}):
            cells = sorted((r for r in rows if r["task"] == task and r["model_role"] == role),
                           key=lambda r: r["round"])  # fmt: skip
            x = [r["round"] for r in cells]
            color = COLORS.get(role)
            ax.plot(x, [100 * r["value"] for r in cells], marker="o", label=role, color=color)
            ax.fill_between(x, [100 * r["ci_low"] for r in cells],
                            [100 * r["ci_high"] for r in cells], alpha=0.2, color=color)  # fmt: skip
        metric = next((r["metric"] for r in rows if r["task"] == task), "")
        ax.set_title(task)
        ax.set_xlabel("refinement round")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_xticks(sorted({r["round"] for r in rows}) or [1])
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(figure, path)


def loss_plot(curves: dict[str, list[float]], path: Path) -> bytes:
    """Training loss per optimizer step, one line per run (name -> losses). Writes ``path``."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, label=name, color=COLORS.get(name.split("_")[0]))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (weighted CE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(figure, path)


def markdown_image(png: bytes, alt: str) -> str:
    """A markdown image holding ``png`` inline (base64), for Dagster's markdown metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
