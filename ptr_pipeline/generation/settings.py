"""Settings of the two generation stages. Flat, with shared knobs under the same names."""

import dataclasses
import importlib.util
from typing import ClassVar

import pydantic

from ptr_pipeline.conversation import check_refine_turn
from ptr_pipeline.engines import Backend, Sampling
from ptr_pipeline.generation.prompts import STRONG_TEMPLATES, THOUGHT_TEMPLATES


class _GenerationSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    backend: Backend = pydantic.Field(
        "transformers", description="transformers (CPU or GPU) or vllm (GPU; needs the vllm extra)"
    )
    temperature: float = pydantic.Field(0.9, ge=0.0, description="0 = greedy")
    top_p: float = pydantic.Field(0.95, gt=0.0, le=1.0)
    top_k: int = pydantic.Field(30, ge=0, description="0 = off")
    max_new_tokens: int = pydantic.Field(64, ge=1)
    batch_size: int = pydantic.Field(
        64, ge=1, description="prompts per forward pass (transformers)"
    )
    shard_size: int = pydantic.Field(
        256,
        ge=1,
        description="queries per resumable shard; a crash loses at most one shard. Sampling is "
        "seeded per shard and batch, so with temperature > 0 another shard_size or batch_size "
        "samples other (equally valid) drafts",
    )
    seed: int = 0
    tensor_parallel_size: int = pydantic.Field(1, ge=1, description="vllm only")
    gpu_memory_utilization: float = pydantic.Field(0.85, gt=0.0, le=1.0, description="vllm only")

    TEMPLATES: ClassVar[dict[str, str]] = {}  # the stage's prompt registry

    @pydantic.field_validator("backend")
    @classmethod
    def _backend_installed(cls, backend: str) -> str:
        if backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ValueError("backend 'vllm' needs vllm: pip install 'ptr-pipeline[vllm]'")
        return backend

    @pydantic.field_validator("template", check_fields=False)
    @classmethod
    def _known_template(cls, name: str) -> str:
        if name not in cls.TEMPLATES:
            raise ValueError(f"unknown template {name!r}; choose one of {sorted(cls.TEMPLATES)}")
        return name

    def sampling(self, n: int = 1) -> Sampling:
        return Sampling(
            n=n,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
        )


class ThoughtSettings(_GenerationSettings):
    """The weak model drafts ``num_thoughts`` answers per query (the "thoughts"). The model
    itself is an input (the ``weak_model`` asset), not a setting."""

    TEMPLATES: ClassVar[dict[str, str]] = THOUGHT_TEMPLATES

    num_thoughts: int = pydantic.Field(
        2, ge=1, description="drafts per query (sampled independently)"
    )
    template: str = pydantic.Field("ptr_thought_v1", description="see generation/prompts.py")


class RefineSettings(_GenerationSettings):
    """The strong model refines the weak thoughts over ``num_rounds`` in-context rounds. The
    model itself is an input (the ``strong_model`` asset), not a setting."""

    TEMPLATES: ClassVar[dict[str, str]] = STRONG_TEMPLATES

    num_rounds: int = pydantic.Field(
        1, ge=1, description="strong refinement rounds; the last is the answer"
    )
    template: str = pydantic.Field("ptr_refine_v2", description="see generation/prompts.py")
    refine_turn: str | None = pydantic.Field(
        None,
        description="the user turn before every later step: here before strong rounds > 1, and "
        "recorded in every row, so training and evaluation use the same one (the one owner of "
        "this setting). {query} is replaced by the question. null = the strong model's default "
        "(models.default_refine_turn): re-reading ('Please continue thinking and refine your "
        "answer to:\\n\\n{query}') for the miniature world's models, the paper's generic "
        "'Please continue thinking and refine your answer.' otherwise",
    )
    temperature: float = pydantic.Field(
        0.0,
        ge=0.0,
        description="0 = greedy: the strong model's best answer",
    )
    consistency_samples: int = pydantic.Field(
        4,
        ge=0,
        description="the last round is also sampled this many more times (column samples), for "
        "the filter's self-consistency check (paper appendix A.1: N-sampling); 0 = off",
    )
    consistency_temperature: float = pydantic.Field(
        0.8, gt=0.0, description="temperature of those samples (top_p and top_k as above)"
    )

    @pydantic.field_validator("refine_turn")
    @classmethod
    def _refine_turn(cls, template: str | None) -> str | None:
        return None if template is None else check_refine_turn(template)

    def consistency_sampling(self, seed: int) -> Sampling:
        """The sampling of the self-consistency samples: ``consistency_samples`` per prompt."""
        return dataclasses.replace(
            self.sampling(n=self.consistency_samples),
            temperature=self.consistency_temperature,
            seed=seed + 1,
        )
