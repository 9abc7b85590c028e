"""What a model setting names, resolved and recorded: the core of the ``models`` assets.

A setting is ``world:<role>`` (the miniature world, pretrained here on first use), ``tiny:<name>``
(a random tiny model, for plumbing tests), a local folder, or a hub id. Each resolves to what
``from_pretrained`` loads, with a fingerprint (``models.model_fingerprint``: file hashes, or the
hub id) and a revision: the recipe hash of a world model, the hub commit of a cached hub model
(``huggingface_hub.try_to_load_from_cache``; nothing is downloaded), else the fingerprint.
"""

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from ptr_pipeline import schemas
from ptr_pipeline.models import TINY_PREFIX, WORLD_PREFIX, model_fingerprint, resolve_model
from ptr_pipeline.world.models import WorldRecipe, build_world_models


def resolve_models(
    specs: dict[str, str],
    models_dir: Path,
    recipe: WorldRecipe,
    on_line: Callable[[str], None] = print,
) -> dict[str, pa.Table]:
    """role -> a one-row ``schemas.MODEL_REF`` table for each setting in ``specs``.

    Raises:
        FileNotFoundError: a setting that looks like a path (``/``, ``./``) names no folder.
    """
    world = None
    refs = {}
    for role, spec in specs.items():
        if spec.startswith(WORLD_PREFIX):
            world = world or build_world_models(models_dir, recipe, on_line)
            model, revision = str(world[spec.removeprefix(WORLD_PREFIX)]), f"world-{recipe.key()}"
        elif spec.startswith(TINY_PREFIX):
            model, revision = resolve_model(spec, models_dir), "tiny"
        else:
            model, revision = spec, _hub_revision(spec)
        identity = model_fingerprint(model)
        refs[role] = pa.Table.from_pylist(
            [
                {
                    "role": role,
                    "spec": spec,
                    "model": model,
                    "fingerprint": identity,
                    "revision": revision or identity[:16],
                }
            ],
            schema=schemas.MODEL_REF,
        )
    return refs


def _hub_revision(spec: str) -> str | None:
    if Path(spec).is_dir():
        return None  # a local folder: its fingerprint (file hashes) is its revision
    if spec.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"{spec}: no such model folder")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not a valid repo id: from_pretrained will say so when it loads
        return "unresolved"
    if isinstance(cached, str):  # .../snapshots/<commit>/config.json
        return Path(cached).parent.name
    return "not in the local cache (resolved when loaded)"
