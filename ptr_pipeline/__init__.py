"""ptr-pipeline: Progressive Thought Refinement (arXiv 2410.13413) as a Dagster pipeline.

The core packages (queries, generation, filtering, training, evaluation) are plain Python and never
import Dagster; ``ptr_pipeline.defs`` wires them into assets, checks, jobs and schedules.
"""

__version__ = "0.1.0"
