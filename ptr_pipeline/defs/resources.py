"""Resources: where files live, which device runs the models, and the IO managers built on both."""

from pathlib import Path

import dagster as dg
import pydantic

from ptr_pipeline.defs.io_managers import CheckpointIOManager, ParquetIOManager
from ptr_pipeline.engines import Generator, LazyGenerator, make_generator
from ptr_pipeline.home import Home, default_root


class PtrHomeResource(dg.ConfigurableResource):
    """The pipeline's root folder ($PTR_HOME, default ./.ptr): artifacts, work shards, tiny models."""

    root: str

    def home(self) -> Home:
        return Home(Path(self.root))


class ComputeResource(dg.ConfigurableResource):
    """The device for model work. GPU assets also carry pool="gpu" so runs share GPUs in turn."""

    device: str = pydantic.Field("auto", description="auto, cpu, cuda or cuda:N")

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def generator(self, backend: str, model_path: str, settings) -> Generator:
        """A generator for a resolved model path, with the stage's engine options."""
        return make_generator(
            backend,
            model_path,
            device=self.resolved_device(),
            batch_size=settings.batch_size,
            tensor_parallel_size=settings.tensor_parallel_size,
            gpu_memory_utilization=settings.gpu_memory_utilization,
        )

    def engine(self, backend: str, path: str, settings) -> LazyGenerator:
        """The model at ``path`` (a folder or hub id), loaded only when a stage first generates."""
        return LazyGenerator(lambda: self.generator(backend, path, settings), model_path=path)


def build_resources(root: str | None = None) -> dict:
    """Every resource the assets need, rooted at ``root`` (default: $PTR_HOME or ./.ptr)."""
    home = Home(Path(root) if root else default_root())
    return {
        "ptr_home": PtrHomeResource(root=str(home.root)),
        "compute": ComputeResource(),
        "parquet_io_manager": ParquetIOManager(base_dir=str(home.artifacts)),
        "checkpoint_io_manager": CheckpointIOManager(base_dir=str(home.artifacts)),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
