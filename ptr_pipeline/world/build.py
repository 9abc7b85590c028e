"""Building the world's models: one pretraining run (``world.pretrain``), three snapshots saved.

Each snapshot is saved with ``save_pretrained`` and a checkpoint manifest (file hashes, the
recipe, the step, the loss curve), so it loads back through ``from_pretrained`` like any hub
model. A build writes into a hidden folder beside ``world_folder`` and renames it when all three
are saved: an intact folder is reused as is, an interrupted build leaves nothing behind.
"""

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ptr_pipeline.storage import CHECKPOINT_MANIFEST, checkpoint_problems, folder_manifest_files
from ptr_pipeline.world.pretrain import pretrain
from ptr_pipeline.world.recipe import CODE_VERSION, ROLES, WorldRecipe, world_folder

log = logging.getLogger(__name__)


def build_world_models(
    models_dir: Path, recipe: WorldRecipe, on_line: Callable[[str], None] = log.info
) -> dict[str, Path]:
    """The three model folders of ``recipe``, pretrained now unless an intact copy exists
    (about 5 minutes on 2 cores).

    Returns:
        role (``weak``, ``base``, ``strong``) -> a Hugging Face checkpoint folder,
        ``world_folder(models_dir, recipe) / role``.

    Raises:
        FloatingPointError: the pretraining loss is not finite (nothing is kept).
    """
    folder = world_folder(models_dir, recipe)
    paths = {role: folder / role for role in ROLES}
    if all(p.is_dir() and not checkpoint_problems(p) for p in paths.values()):
        return paths
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        _build(recipe, tmp, on_line)
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete earlier build
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first
            if any(checkpoint_problems(p) for p in paths.values()):
                raise
        on_line(f"world: models in {folder}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _build(
    recipe: WorldRecipe, out: Path, on_line: Callable[[str], None], probe_every: int = 0
) -> None:
    """Pretrain and save the snapshots into ``out/<role>``; ``probe_every`` > 0 also saves
    ``out/probe-<step>`` folders along the way (for choosing snapshot steps; docs/world.md)."""
    started = time.perf_counter()
    at_step = {step: role for role, step in recipe.snapshots.items()}

    def on_step(model, tokenizer, step: int, losses: list[float]) -> None:
        if probe_every and step % probe_every == 0:
            model.save_pretrained(out / f"probe-{step}")
            tokenizer.save_pretrained(out / f"probe-{step}")
        role = at_step.get(step)
        if role is None:
            return
        target = out / role
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        manifest = {
            "world_role": role,
            "recipe": recipe.model_dump(),
            "code_version": CODE_VERSION,
            "step": step,
            "parameters": sum(p.numel() for p in model.parameters()),
            "loss_curve": losses[:],
            "train_seconds": round(time.perf_counter() - started, 1),
            "files": folder_manifest_files(target),
        }
        (target / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest, indent=1))
        on_line(f"world: saved {role} (step {step}, loss {losses[-1]:.4f})")

    pretrain(recipe, on_step, on_line)


def describe(model: str) -> dict:
    """What a world model's manifest says (``world_step``, ``parameters``, the last
    ``pretrain_loss``, ``pretrain_seconds``); {} for any other model or a hub id."""
    manifest = Path(model) / CHECKPOINT_MANIFEST
    if not manifest.is_file():
        return {}
    content = json.loads(manifest.read_text())
    if "world_role" not in content:
        return {}
    return {
        "world_step": content["step"],
        "parameters": content["parameters"],
        "pretrain_loss": content["loss_curve"][-1],
        "pretrain_seconds": content["train_seconds"],
    }
