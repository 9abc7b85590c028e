"""The miniature world: a seeded task family and tiny models pretrained on it from scratch, so the
demo's scores mean something (docs/world.md). Plain Python; the Dagster layer wires it as the
``models`` group, upstream of every stage. It builds and names its own models; every other model
setting is resolved by the base (``ptr_pipeline.models.resolve_model_ref``).
"""

from ptr_pipeline.world import models
from ptr_pipeline.world.models import (
    CODE_VERSION,
    ROLES,
    WorldRecipe,
    build_world_models,
    data_fields_changed,
    describe,
    world_folder,
    world_revision,
)
from ptr_pipeline.world.tasks import WORLD_TASKS

__all__ = [
    "CODE_VERSION",
    "ROLES",
    "WORLD_TASKS",
    "WorldRecipe",
    "build_world_models",
    "data_fields_changed",
    "describe",
    "models",
    "world_folder",
    "world_revision",
]
