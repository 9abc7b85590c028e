"""Where the pipeline keeps its files: one root folder (``$PTR_HOME``, default ``./.ptr``).

<root>/artifacts/   asset storage (Parquet, checkpoint folders), written by the IO managers
<root>/work/        resumable shards, training staging folders
<root>/models/      the embedded tiny models, built on first use
"""

import os
from dataclasses import dataclass
from pathlib import Path

from ptr_pipeline.models import resolve_model


def default_root() -> Path:
    return Path(os.environ.get("PTR_HOME", ".ptr")).absolute()


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def resolve_model(self, spec: str) -> str:
        """What ``from_pretrained`` loads for ``spec`` (builds ``tiny:*`` models on first use)."""
        return resolve_model(spec, self.models)
