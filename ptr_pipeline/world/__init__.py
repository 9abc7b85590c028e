"""The miniature world: a seeded task family and tiny models pretrained on it from scratch, so the
demo's scores mean something (docs/world.md). Plain Python; the Dagster layer wires it as the
``models`` group, upstream of every stage.

``recipe`` (what decides the world, and where its models live) -> ``tasks`` (the problems and
their renderings) -> ``corpus`` (the pretraining conversations) and ``data`` (the eval sets and
the query pool) -> ``tokenizer`` -> ``pretrain`` (one run) -> ``build`` (three snapshots saved).
"""

from ptr_pipeline.world.build import build_world_models, describe
from ptr_pipeline.world.recipe import (
    CODE_VERSION,
    ROLES,
    WorldRecipe,
    data_fields_changed,
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
    "world_folder",
    "world_revision",
]
