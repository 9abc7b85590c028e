"""What the evaluated checkpoints and score tables were made from, and which are stale.

Read from the files the pipeline writes under ``$PTR_HOME/artifacts`` (README, "Where files go"):

- a checkpoint folder's manifest (``storage.CHECKPOINT_MANIFEST``) records the
  ``dataset_fingerprint`` (``storage.table_fingerprint`` of the table it trained on) and the
  ``refine_turn`` it was trained with;
- an ``eval_scores`` partition's rows name each role's ``model`` (the checkpoint folder it
  loaded) and the ``refine_turn`` evaluation asked with;
- ``<asset>/latest.parquet`` and ``<asset>/latest`` (a symlink) name the newest version.

Stale: a checkpoint trained on a ``ptr_dataset`` other than the latest; scores of a checkpoint (or
base model) other than the latest.
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ptr_pipeline.storage import (
    CHECKPOINT_MANIFEST,
    LATEST,
    table_fingerprint,
)

# The rows a checkpoint is trained on, from a ptr_dataset table: the PTR checkpoint trains on the
# table itself, the SFT baseline on its rows without thoughts (training.sft_rows, passed in by
# the caller: evaluation does not import the training stage).
DatasetView = Callable[[pa.Table], pa.Table]


@dataclass(frozen=True)
class CheckpointRecord:
    """One checkpoint folder and what it was trained on.

    Attributes:
        asset: ``ptr_checkpoint`` or ``sft_checkpoint``.
        path: the folder.
        dataset_fingerprint: its manifest's (None: no manifest, or not recorded).
        dataset_version: the ``ptr_dataset`` version (``versions/<sha16>`` file stem) whose rows
            it trained on, or None when no stored version matches.
        refine_turn: the turn it was trained with (its manifest's).
        stale: why it is stale, or None.
    """

    asset: str
    path: Path
    dataset_fingerprint: str | None
    dataset_version: str | None
    refine_turn: str | None
    stale: str | None = None

    @property
    def version(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class ScoresRecord:
    """One ``eval_scores`` partition (a task) and what it was made from.

    Attributes:
        task: the partition.
        models: model role -> the model folder (or hub id) its rows name.
        checkpoints: model role -> the record of the checkpoint it scored (trained roles whose
            folder still exists).
        refine_turn: the turn evaluation asked with (the rows' ``refine_turn``), or None when
            not recorded for these rows.
        stale: why the scores are stale (one reason per role), empty when current.
    """

    task: str
    models: dict[str, str]
    checkpoints: dict[str, CheckpointRecord] = field(default_factory=dict)
    refine_turn: str | None = None
    stale: list[str] = field(default_factory=list)


class DatasetVersions:
    """The stored ``ptr_dataset`` versions, newest first, each fingerprinted (through a view) only
    when asked: a checkpoint of the latest version reads one file."""

    def __init__(self, artifacts: Path):
        folder = artifacts / "ptr_dataset"
        latest = folder / LATEST
        versions = sorted(
            (folder / "versions").glob("*.parquet"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        self.latest: str | None = None
        if latest.exists():
            self.latest = next((p.stem for p in versions if p.samefile(latest)), "latest")
            versions = [latest, *(p for p in versions if not p.samefile(latest))]
        self._paths = versions
        self._fingerprints: dict[tuple[int, int], str] = {}
        self._tables: dict[int, pa.Table] = {}

    def _name(self, i: int) -> str:
        return self.latest if i == 0 and self.latest else self._paths[i].stem

    def _fingerprint(self, i: int, view_index: int, view: DatasetView) -> str:
        key = (i, view_index)
        if key not in self._fingerprints:
            if i not in self._tables:
                self._tables[i] = pq.read_table(self._paths[i])
            self._fingerprints[key] = table_fingerprint(view(self._tables[i]))
        return self._fingerprints[key]

    def find(self, dataset_fingerprint: str, view: DatasetView, view_index: int) -> str | None:
        """The name of the newest stored version whose rows, through ``view``, have
        ``dataset_fingerprint``; None when none has."""
        for i in range(len(self._paths)):
            if self._fingerprint(i, view_index, view) == dataset_fingerprint:
                return self._name(i)
        return None


def checkpoint_records(
    artifacts: Path, views: Mapping[str, DatasetView]
) -> dict[str, CheckpointRecord]:
    """checkpoint asset -> the record of its latest folder (``artifacts/<asset>/latest``), for
    each asset of ``views`` that has one.

    Args:
        artifacts: ``$PTR_HOME/artifacts``.
        views: checkpoint asset -> the rows it trains on, from a ``ptr_dataset`` table.
    """
    datasets = DatasetVersions(artifacts)
    out = {}
    for asset in views:
        link = artifacts / asset / "latest"
        if link.exists():
            out[asset] = _checkpoint(asset, link.resolve(), views, datasets)
    return out


def _checkpoint(
    asset: str, folder: Path, views: Mapping[str, DatasetView], datasets: DatasetVersions
) -> CheckpointRecord:
    manifest_path = folder / CHECKPOINT_MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    fp, turn = manifest.get("dataset_fingerprint"), manifest.get("refine_turn")
    version, stale = None, None
    # Unknown, so not called stale: no fingerprint (not trained here), or no ptr_dataset stored.
    if fp is not None and datasets.latest is not None:
        version = datasets.find(fp, views[asset], list(views).index(asset))
        if version is None:
            stale = "trained on a ptr_dataset no longer stored (not the latest)"
        elif version != datasets.latest:
            stale = f"trained on ptr_dataset {version}, not the latest {datasets.latest}"
    return CheckpointRecord(asset, folder, fp, version, turn, stale)


def _same(a: str, b: Path | str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def _same_checkpoint(model: str, latest: CheckpointRecord) -> bool:
    """The scored folder is the latest checkpoint: the same folder, or the same version (a
    checkpoint version names its files' hashes, so it holds wherever ``$PTR_HOME`` moved)."""
    return _same(model, latest.path) or Path(model).name == latest.version


def scores_records(
    artifacts: Path,
    scores: Mapping[str, pa.Table],
    checkpoints: Mapping[str, CheckpointRecord],
    roles: Mapping[str, str],
    views: Mapping[str, DatasetView],
    base_model: str | None = None,
) -> dict[str, ScoresRecord]:
    """task -> the record of its latest ``eval_scores`` partition.

    Args:
        artifacts: ``$PTR_HOME/artifacts``.
        scores: task -> the partition's rows (``schemas.EVAL_SCORES``).
        checkpoints: ``checkpoint_records`` (the latest of each checkpoint asset).
        roles: model role -> its checkpoint asset (``{"ptr": "ptr_checkpoint", ...}``).
        views: as for ``checkpoint_records``.
        base_model: what the latest ``base_model`` asset loads; scores of the ``base`` role
            naming another model are stale.
    """
    datasets = DatasetVersions(artifacts)
    out = {}
    for task, table in scores.items():
        models: dict[str, str] = {}
        for r in table.select(["model_role", "model"]).to_pylist():
            models.setdefault(r["model_role"], r["model"])
        turns = set(table.column("refine_turn").to_pylist()) - {None}
        record = ScoresRecord(task, models, refine_turn=turns.pop() if len(turns) == 1 else None)
        for role, model in sorted(models.items()):
            asset = roles.get(role)
            if asset is not None:
                latest = checkpoints.get(asset)
                folder = Path(model)
                if folder.is_dir() and asset in views:
                    scored = (
                        latest
                        if latest and _same_checkpoint(model, latest)
                        else _checkpoint(asset, folder.resolve(), views, datasets)
                    )
                    record.checkpoints[role] = scored
                if latest is None:
                    record.stale.append(f"{role}: no {asset} under artifacts")
                elif not _same_checkpoint(model, latest):
                    record.stale.append(
                        f"{role}: scores of {asset} {folder.name}, not the latest {latest.version}"
                    )
                elif latest.stale:
                    record.stale.append(f"{role}: its {asset} is stale ({latest.stale})")
            elif role == "base" and base_model is not None and not _same(model, base_model):
                record.stale.append(f"base: scores of {model}, not the latest base_model")
        out[task] = record
    return out


def provenance_markdown(
    checkpoints: Mapping[str, CheckpointRecord],
    scores: Mapping[str, ScoresRecord],
    latest_dataset: str | None,
) -> str:
    """What each checkpoint and score table was made from, as markdown, stale ones marked, and
    the refine turns: the checkpoints' (trained with) and evaluation's (asked with)."""
    lines = [
        "| what | version | made from | status |",
        "|---|---|---|---|",
        f"| ptr_dataset | {latest_dataset or '(none)'} | | latest |",
    ]
    for asset, c in checkpoints.items():
        made = f"ptr_dataset {c.dataset_version or _short(c.dataset_fingerprint)}"
        status = f"STALE: {c.stale}" if c.stale else "current"
        lines.append(f"| {asset} | {c.version} | {made} | {status} |")
    rows: dict[tuple[str, str, str], list[str]] = {}  # tasks made from the same, in one row
    for task, s in scores.items():
        versions = ", ".join(
            f"{role} {Path(m).name if role in s.checkpoints else _tail(m)}"
            for role, m in sorted(s.models.items())
        )
        made = "; ".join(
            f"{role}: ptr_dataset {c.dataset_version or _short(c.dataset_fingerprint)}"
            for role, c in sorted(s.checkpoints.items())
        )
        status = "STALE: " + "; ".join(s.stale) if s.stale else "current"
        rows.setdefault((versions, made or "-", status), []).append(task)
    for (versions, made, status), tasks in rows.items():
        lines.append(f"| eval_scores {', '.join(tasks)} | {versions} | {made} | {status} |")
    turns: dict[str, list[str]] = {}
    for asset, c in checkpoints.items():
        turns.setdefault(repr(c.refine_turn) if c.refine_turn else "(not recorded)", []).append(
            asset
        )
    lines.append("")
    lines.append(
        "Refine turn the checkpoints were trained with: "
        + "; ".join(f"{t} ({', '.join(a)})" for t, a in turns.items())
    )
    asked: dict[str, list[str]] = {}
    for task, s in scores.items():
        key = repr(s.refine_turn) if s.refine_turn else "(not recorded with these scores)"
        asked.setdefault(key, []).append(task)
    lines.append(
        "Refine turn evaluation asked with: "
        + "; ".join(f"{t} ({', '.join(tasks)})" for t, tasks in asked.items())
    )
    return "\n".join(lines)


def _tail(model: str) -> str:
    """A model folder's last two path parts (``world-<hash>/base``); a hub id as it is."""
    parts = Path(model).parts
    return "/".join(parts[-2:]) if Path(model).is_absolute() else model


def _short(fp: str | None) -> str:
    return f"(rows {fp[:16]})" if fp else "(unknown)"
