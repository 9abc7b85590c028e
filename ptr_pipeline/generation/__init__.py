"""Generation: the weak model's thoughts and the strong model's round-by-round refinements."""

from ptr_pipeline.generation.refine import refine_thoughts
from ptr_pipeline.generation.settings import RefineSettings, Sampling, ThoughtSettings
from ptr_pipeline.generation.thoughts import CODE_VERSION, generate_thoughts
