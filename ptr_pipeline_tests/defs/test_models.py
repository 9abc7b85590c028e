"""The models assets: the world is asked only for ``world:`` settings, every other setting is
resolved by the base; one ``MODEL_REF`` row each, with the world's recipe hash as its revision."""

import json
from pathlib import Path

import dagster as dg

from ptr_pipeline.defs.models import models
from ptr_pipeline.defs.resources import build_resources
from ptr_pipeline.home import Home
from ptr_pipeline.models import model_fingerprint, resolve_model_ref
from ptr_pipeline.storage import CHECKPOINT_MANIFEST, folder_manifest_files
from ptr_pipeline.world import ROLES, WorldRecipe, world_folder, world_revision


def _built_world(models_dir) -> dict:
    """Folders where a built world's would be, with manifests that verify (nothing trained)."""
    folder = world_folder(models_dir, WorldRecipe())
    for step, role in enumerate(ROLES, start=1):
        (folder / role).mkdir(parents=True)
        (folder / role / "config.json").write_text(json.dumps({"role": role}))
        manifest = {"world_role": role, "step": step, "parameters": 7, "loss_curve": [1.0, 0.5],
                    "train_seconds": 2.0, "files": folder_manifest_files(folder / role)}  # fmt: skip
        (folder / role / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
    return {role: folder / role for role in ROLES}


def test_world_and_other_settings_resolve_into_one_row_each(models_home, tmp_path):
    home = Home(tmp_path / "ptr")  # its own models folder, sharing the session's tiny model
    tiny = Path(models_home.resolve_model("tiny:base"))
    home.models.mkdir(parents=True)
    (home.models / tiny.name).symlink_to(tiny)
    world = _built_world(home.models)
    config = {"weak": "world:weak", "base": "tiny:base", "strong": "world:strong"}
    result = dg.materialize(
        [models],
        resources=build_resources(str(home.root)),
        run_config={"ops": {"models": {"config": config}}},
    )
    assert result.success
    rows = {
        k: result.asset_value(k).to_pylist() for k in ("weak_model", "base_model", "strong_model")
    }
    revision = world_revision(WorldRecipe())
    assert revision == world_folder(home.models, WorldRecipe()).name
    assert rows["weak_model"] == [{
        "role": "weak", "spec": "world:weak", "model": str(world["weak"]),
        "fingerprint": model_fingerprint(str(world["weak"])), "revision": revision,
    }]  # fmt: skip
    assert rows["strong_model"][0]["model"] == str(world["strong"])
    assert rows["base_model"] == resolve_model_ref("base", "tiny:base", home.models).to_pylist()
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    assert metadata["strong_model"]["world_step"].value == 3  # the world's manifest, described
    assert metadata["strong_model"]["pretrain_loss"].value == 0.5
    assert "world_step" not in metadata["base_model"]
