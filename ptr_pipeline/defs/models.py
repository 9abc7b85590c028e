"""Assets: weak_model, base_model and strong_model (group ``models``), upstream of every stage.

Each holds one row (``schemas.MODEL_REF``, built by ``models.model_ref``): the setting, what
``from_pretrained`` loads, its fingerprint and revision. The lineage graph then shows which model
fed which stage, and a changed model re-keys every cache downstream. The default is the miniature
world (``world:<role>``), pretrained here on first use and reused while its recipe is unchanged;
the world is asked only for those settings (its folders, and its recipe hash as the revision),
every other setting is resolved by the base (``models.resolve_model_ref``).
"""

import time

import dagster as dg
import pyarrow as pa
import pydantic

from ptr_pipeline import world
from ptr_pipeline.defs.resources import PtrHomeResource
from ptr_pipeline.models import WORLD_PREFIX, ModelSpec, model_ref, resolve_model_ref

MODEL_ASSETS = {"weak": "weak_model", "base": "base_model", "strong": "strong_model"}
_DESCRIPTIONS = {
    "weak": "The weak model: drafts the thoughts.",
    "base": "The base model: fine-tuned by PTR and by the SFT baseline; prompted as the baseline.",
    "strong": "The strong model: refines the weak thoughts in context.",
}


class WorldRecipeConfig(dg.Config, world.WorldRecipe):
    """Dagster view of WorldRecipe: same fields, same defaults."""


class ModelsConfig(dg.Config):
    """Which models the pipeline uses: ``world:<role>`` (default), ``tiny:<name>``, a local
    folder or a hub id; and the recipe of the world, when a world model is chosen."""

    weak: ModelSpec = pydantic.Field("world:weak", description="drafts the thoughts")
    base: ModelSpec = pydantic.Field("world:base", description="the model PTR fine-tunes")
    strong: ModelSpec = pydantic.Field("world:strong", description="refines the thoughts")
    world: WorldRecipeConfig = pydantic.Field(default_factory=WorldRecipeConfig)

    @pydantic.model_validator(mode="after")
    def _bundled_data(self) -> "ModelsConfig":
        # The stages read the world's bundled eval sets and queries, drawn for the default
        # recipe: another seed or operand range would pretrain on held-out problems.
        changed = world.data_fields_changed(self.world.model_dump())
        if changed:
            raise ValueError(
                f"world.{changed[0]}: the bundled world eval sets and queries are the default "
                "recipe's; changing the world's data (seed, operands, sizes) is not supported "
                "yet (models and training settings are)"
            )
        return self


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key, group_name="models", description=_DESCRIPTIONS[role], kinds={"pytorch"}
        ).with_io_manager_key("parquet_io_manager")
        for role, key in MODEL_ASSETS.items()
    ],
    name="models",
    can_subset=True,
    code_version=world.CODE_VERSION,
)
def models(context: dg.AssetExecutionContext, config: ModelsConfig, ptr_home: PtrHomeResource):
    started = time.perf_counter()
    wanted = {
        role: getattr(config, role)
        for role, key in MODEL_ASSETS.items()
        if dg.AssetKey(key) in context.selected_asset_keys
    }
    models_dir = ptr_home.home().models
    recipe = world.WorldRecipe(**config.world.model_dump())
    folders = None  # the world's models, built (or found) when a setting first names one
    refs = {}
    for role, spec in wanted.items():
        if spec.startswith(WORLD_PREFIX):
            folders = folders or world.build_world_models(models_dir, recipe, context.log.info)
            folder = folders[spec.removeprefix(WORLD_PREFIX)]
            refs[role] = model_ref(role, spec, str(folder), world.world_revision(recipe))
        else:
            refs[role] = resolve_model_ref(role, spec, models_dir)
    for role, ref in refs.items():
        row = ref.to_pylist()[0]
        yield dg.MaterializeResult(
            asset_key=MODEL_ASSETS[role],
            value=ref,
            metadata={
                "spec": row["spec"],
                "model": dg.MetadataValue.path(row["model"]),
                "revision": row["revision"],
                "fingerprint": row["fingerprint"],
                **world.describe(row["model"]),
                "compute_seconds": round(time.perf_counter() - started, 3),
            },
        )


def model_path(ref: pa.Table) -> str:
    """What ``from_pretrained`` loads, from a model asset's row."""
    return ref.column("model")[0].as_py()
