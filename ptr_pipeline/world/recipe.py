"""The world's recipe: every setting that decides its data and its models.

The models' folder is keyed by a hash of the recipe and the code version
(``$PTR_HOME/models/world-<hash>/``): an unchanged rerun trains nothing, a changed recipe builds a
new world beside the old one. The same name is the models' revision in their ``MODEL_REF`` rows.
"""

from pathlib import Path

import pydantic

from ptr_pipeline.models import WORLD_MODELS
from ptr_pipeline.storage import fingerprint

# Bump with any change to what a build trains or writes (corpus, tokenizer sample, schedule,
# batches, ...): it is in the folder's hash, so a changed build never reuses an old world. A change
# that keeps every model bitwise identical keeps it, and so every built world stays in use.
CODE_VERSION = "world_v4"
ROLES = WORLD_MODELS


class WorldRecipe(pydantic.BaseModel):
    """Everything that decides the world's data and models (its hash names the folder)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    min_operand: int = pydantic.Field(10, ge=1, description="both operands are drawn from")
    max_operand: int = pydantic.Field(99, ge=1, description="... min_operand..max_operand")
    refine_template: str = pydantic.Field(
        "ptr_refine_v2", description="the strong stage's draft prompt the corpus teaches"
    )
    eval_items: int = pydantic.Field(500, ge=1, description="held-out problems per task")
    pool_queries: int = pydantic.Field(600, ge=1, description="queries offered to the query pool")
    icl_fraction: float = pydantic.Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="share of the corpus in the strong stage's draft prompt: hurried drafts, then "
        "the question -> the right answer (models that never saw drafts answered that prompt "
        "with noise; taught it after pretraining, they copied the drafts' digits: docs/world.md, "
        "tries 14-19)",
    )
    vocab_size: int = pydantic.Field(512, ge=300)
    hidden_size: int = 128
    num_layers: int = 4
    intermediate_size: int = 256
    steps: int = pydantic.Field(400, ge=1, description="optimizer steps of the pretraining run")
    draft_slip_rate: float = pydantic.Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="chance that a step of a taught draft misreads a digit or mis-adds "
        "(tasks.Problem.draft_steps)",
    )
    batch_size: int = 64
    learning_rate: float = 3e-3
    torch_threads: int = pydantic.Field(
        2,
        ge=1,
        description="torch threads while building: float sums depend on the thread count, so "
        "the same recipe builds the same models whatever OMP_NUM_THREADS says, on one machine "
        "and torch build (2: the build takes 0.8 s a step on 2 cores against 1.2 s on one)",
    )
    context_length: int = pydantic.Field(
        2048,
        ge=64,
        description="the models' max_position_embeddings (RoPE: the weights do not depend on it): "
        "2048 holds every bundled eval item with the re-reading refine turn over 3 rounds "
        "(XSum's longest needs 1,722 tokens of this tokenizer)",
    )
    snapshots: dict[str, int] | None = pydantic.Field(
        None,
        description="the step at which each role is saved; null = chosen by measuring "
        "(world.probe): weak and base at the probed steps closest to snapshot_targets, strong "
        "at the last step. Fixed steps chosen on one machine give other roles on another CPU "
        "(docs/world.md, 'What the results depend on')",
    )
    snapshot_targets: dict[str, float] = pydantic.Field(
        # The roles' design (issue 6's bands: weak 20-50%, strong >= 85%, base between).
        default_factory=lambda: {"weak": 0.35, "base": 0.70},
        description="snapshots: null: the probe accuracy (GSM8K rendering) weak and base are "
        "chosen for; strong is the last step",
    )
    probe_from: int = pydantic.Field(200, ge=1, description="the first step probed")
    probe_every: int = pydantic.Field(5, ge=1, description="steps between probes")
    probe_items: int = pydantic.Field(
        200, ge=10, description="GSM8K-style problems per probe (never a held-out one)"
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> "WorldRecipe":
        if self.min_operand > self.max_operand:
            raise ValueError("min_operand > max_operand")
        if self.snapshots is not None:
            if sorted(self.snapshots) != sorted(ROLES):
                raise ValueError(f"snapshots must name {list(ROLES)}")
            steps = [self.snapshots[role] for role in ROLES]
            if not steps[0] < steps[1] < steps[2]:
                raise ValueError(f"snapshots must grow weak < base < strong (got {self.snapshots})")
            if not all(1 <= s <= self.steps for s in self.snapshots.values()):
                raise ValueError(f"snapshot steps must lie in 1..steps={self.steps}")
            return self
        if sorted(self.snapshot_targets) != ["base", "weak"]:
            raise ValueError("snapshot_targets must name weak and base")
        if not 0 <= self.snapshot_targets["weak"] < self.snapshot_targets["base"] <= 1:
            raise ValueError(f"snapshot_targets must grow weak < base in [0, 1] "
                             f"(got {self.snapshot_targets})")  # fmt: skip
        probed = len(range(self.probe_from, self.steps, self.probe_every))
        if probed < 2:
            raise ValueError(
                f"probe_from={self.probe_from}, probe_every={self.probe_every} probe {probed} "
                f"step(s) before steps={self.steps}; weak and base need 2"
            )
        return self

    @property
    def operands(self) -> tuple[int, int]:
        return (self.min_operand, self.max_operand)

    def key(self) -> str:
        """12 hex digits of the recipe's and the code version's hash."""
        return fingerprint(self.model_dump(), CODE_VERSION)[:12]


DATA_FIELDS = ("seed", "min_operand", "max_operand", "eval_items", "pool_queries")


def data_fields_changed(recipe: dict) -> list[str]:
    """The fields of ``recipe`` that decide the bundled data and differ from the default."""
    default = WorldRecipe().model_dump()
    return [f for f in DATA_FIELDS if recipe.get(f, default[f]) != default[f]]


def world_revision(recipe: WorldRecipe) -> str:
    """``world-<recipe hash>``: the name of the recipe's folder, and its models' revision."""
    return f"world-{recipe.key()}"


def world_folder(models_dir: Path, recipe: WorldRecipe) -> Path:
    """Where the models of ``recipe`` live: ``<models_dir>/world-<recipe hash>/<role>/``."""
    return Path(models_dir) / world_revision(recipe)
