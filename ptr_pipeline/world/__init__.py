"""The miniature world: a seeded task family and tiny models pretrained on it from scratch, so the
demo's scores mean something (docs/world.md). Plain Python; the Dagster layer wires it as the
``models`` group, upstream of every stage."""

from ptr_pipeline.world import models
from ptr_pipeline.world.models import (
    ROLES,
    WorldRecipe,
    build_world_models,
    data_fields_changed,
    describe,
    world_folder,
)
from ptr_pipeline.world.resolve import resolve_models
from ptr_pipeline.world.tasks import WORLD_TASKS

__all__ = [
    "ROLES",
    "WORLD_TASKS",
    "WorldRecipe",
    "build_world_models",
    "data_fields_changed",
    "describe",
    "models",
    "resolve_models",
    "world_folder",
]
