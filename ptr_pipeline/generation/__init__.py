"""Generation: the weak model's thoughts and the strong model's round-by-round refinements."""

from ptr_pipeline.generation.refine import refine_thoughts, thoughts_by_query
from ptr_pipeline.generation.settings import RefineSettings, ThoughtSettings
from ptr_pipeline.generation.thoughts import CODE_VERSION, generate_thoughts
