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
from ptr_pipeline.world import tasks
from ptr_pipeline.world.pretrain import pretrain
from ptr_pipeline.world.probe import Prober, choose_snapshots, keep, probe_examples, probe_steps
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


def _build(recipe: WorldRecipe, out: Path, on_line: Callable[[str], None]) -> None:
    """Pretrain and save the snapshots into ``out/<role>``: at the recipe's fixed steps, or, by
    default, at the steps chosen by probe accuracy (``world.probe``: the run is probed every
    ``probe_every`` steps, a copy kept at each probe, and the chosen copies saved at the end)."""
    started = time.perf_counter()
    at_step = {step: role for role, step in (recipe.snapshots or {}).items()}
    probed = set(probe_steps(recipe)) if recipe.snapshots is None else set()
    accuracy: dict[int, float] = {}
    copies: dict[int, object] = {}
    state: dict = {}

    def save(model, tokenizer, role: str, step: int, losses: list[float]) -> None:
        target = out / role
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        manifest = {
            "world_role": role,
            "recipe": recipe.model_dump(),
            "code_version": CODE_VERSION,
            "step": step,
            "parameters": sum(p.numel() for p in model.parameters()),
            "loss_curve": losses[:step],
            # probe accuracy (GSM8K rendering, world.probe) at every probed step, and this one's
            "probe_accuracy": {str(s): a for s, a in sorted(accuracy.items())},
            "snapshot_probe_accuracy": accuracy.get(step),
            "train_seconds": round(time.perf_counter() - started, 1),
            "files": folder_manifest_files(target),
        }
        (target / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest, indent=1))
        probe = f", probe accuracy {accuracy[step]:.1%}" if step in accuracy else ""
        on_line(f"world: saved {role} (step {step}, loss {losses[step - 1]:.4f}{probe})")

    def on_step(model, tokenizer, step: int, losses: list[float]) -> None:
        if step in probed:
            if "prober" not in state:
                split = tasks.eval_split(recipe.seed, recipe.eval_items, recipe.operands)
                state["prober"] = Prober(tokenizer, probe_examples(recipe, split))
            accuracy[step] = state["prober"].accuracy(model)
            on_line(f"world: probe at step {step}: {accuracy[step]:.1%} of "
                    f"{recipe.probe_items} GSM8K-style problems right")  # fmt: skip
            if step < recipe.steps:
                copies[step] = keep(model)
        if step in at_step:
            save(model, tokenizer, at_step[step], step, losses)
        if probed and step == recipe.steps:
            chosen = choose_snapshots(accuracy, recipe.snapshot_targets, recipe.steps)
            on_line(f"world: snapshots chosen by probe accuracy: {chosen} (targets "
                    f"{recipe.snapshot_targets}, strong the last step)")  # fmt: skip
            for role, at in chosen.items():
                save(copies.get(at, model), tokenizer, role, at, losses)
            copies.clear()

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
        "probe_accuracy": content.get("snapshot_probe_accuracy"),
        "parameters": content["parameters"],
        "pretrain_loss": content["loss_curve"][-1],
        "pretrain_seconds": content["train_seconds"],
    }
