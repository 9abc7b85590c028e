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
ROLE_ORDER = {"base": 0, "sft": 1, "ptr": 2}


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


COLUMNS = 3  # panels per row: about 900 px wide, legible where Dagster shows it inline


def accuracy_grid(summary: pa.Table, order: list[str] | None = None) -> list[list[str | None]]:
    """The panels of ``accuracy_plot``, row by row (None: an empty slot), at most ``COLUMNS`` a
    row: the tasks that carry signal (``at_chance`` false, or not assessed) first, then, from a
    new row (unless one row holds every task), the tasks at chance; each group in ``order``
    (then by name)."""
    rank = {task: i for i, task in enumerate(order or [])}
    at_chance: dict[str, bool | None] = {}
    for r in sorted(summary.to_pylist(), key=lambda r: (rank.get(r["task"], len(rank)), r["task"])):
        at_chance.setdefault(r["task"], r.get("at_chance"))
    signal = [t for t, c in at_chance.items() if not c]
    chance = [t for t, c in at_chance.items() if c]
    if len(signal) + len(chance) <= COLUMNS:  # one row holds them all
        return [signal + chance] if at_chance else [[None]]
    columns = min(COLUMNS, max(len(signal), len(chance), 1))
    grid: list[list[str | None]] = []
    for group in (signal, chance):
        for start in range(0, len(group), columns):
            row: list[str | None] = list(group[start : start + columns])
            grid.append(row + [None] * (columns - len(row)))
    return grid or [[None]]


def accuracy_plot(summary: pa.Table, path: Path, order: list[str] | None = None) -> bytes:
    """Each task's primary metric (%) against refinement round, in the panels of
    ``accuracy_grid`` (tasks with signal first; tasks at chance after them, titled and shaded as
    such): one line per model role with its 95% interval as a band, and the chance level of the
    round-1 items as a dotted line, black when every model shares it, else in each model's colour
    (``schemas.EVAL_SUMMARY`` in). Writes ``path``; returns the PNG."""
    plt = _pyplot()
    rows = [r for r in summary.to_pylist() if r["primary"]]
    layout = accuracy_grid(summary.filter(summary.column("primary")), order)
    chance = {r["task"] for r in rows if r.get("at_chance")}
    grid, columns = len(layout), len(layout[0])
    figure, axes = plt.subplots(
        grid, columns, figsize=(3.1 * columns, 2.45 * grid + 0.5), squeeze=False
    )
    rounds = sorted({r["round"] for r in rows}) or [1]
    flat = list(axes.flat)
    for ax, task in zip(flat, [t for row in layout for t in row], strict=True):
        if task is None:
            ax.set_axis_off()
            continue
        cells = [r for r in rows if r["task"] == task]
        for role in sorted({r["model_role"] for r in cells}, key=lambda r: ROLE_ORDER.get(r, 9)):
            mine = sorted((r for r in cells if r["model_role"] == role), key=lambda r: r["round"])
            x = [r["round"] for r in mine]
            color = COLORS.get(role)
            ax.plot(x, [100 * r["value"] for r in mine], marker="o", ms=4, label=role, color=color)
            ax.fill_between(x, [100 * r["ci_low"] for r in mine],
                            [100 * r["ci_high"] for r in mine], alpha=0.2, color=color)  # fmt: skip
        levels = {r["model_role"]: r["chance"] for r in cells if r.get("chance") is not None}
        shared = len({round(v, 9) for v in levels.values()}) == 1
        for role, level in sorted(levels.items()) if not shared else []:  # per model: graded
            ax.axhline(100 * level, color=COLORS.get(role, "black"), ls=":", lw=1.2)
        if shared:  # one level for every model: 1/options, or 0
            ax.axhline(100 * next(iter(levels.values())), color="black", ls=":", lw=1.2)
        metric = cells[0]["metric"] if cells else ""
        if task in chance:
            ax.set_title(f"{task}: at chance", fontsize=10, color="#555555")
            ax.set_facecolor("#f2f2f2")
        else:
            ax.set_title(task, fontsize=11, fontweight="bold")
        ax.set_ylabel(f"{metric} (%)", fontsize=9)
        ax.set_ylim(-3, 103)
        ax.set_xticks(rounds)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for i, row in enumerate(layout):  # under the lowest panel of each column
        for j, task in enumerate(row):
            if task is not None and (i + 1 == len(layout) or layout[i + 1][j] is None):
                axes[i][j].set_xlabel("refinement round", fontsize=9)
    if not rows:
        figure.text(0.5, 0.5, "(no scores)", ha="center", va="center")
    handles, labels = next(
        (ax.get_legend_handles_labels() for ax in flat if ax.get_legend_handles_labels()[0]),
        ([], []),
    )
    if any(r.get("chance") is not None for r in rows):
        handles.append(plt.Line2D([], [], color="black", ls=":", lw=1.2))
        labels.append("chance level (round 1)")
    if handles:
        figure.legend(handles, labels, loc="upper center", ncol=min(len(labels), 2 * columns),
                      fontsize=9, frameon=False, bbox_to_anchor=(0.5, 1.0))  # fmt: skip
    legend_in = 0.4 if columns > 1 else 0.6  # a single column's legend takes two lines
    figure.tight_layout(rect=(0, 0, 1, 1 - legend_in / (2.45 * grid + 0.5)))
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
