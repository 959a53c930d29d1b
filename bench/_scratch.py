"""What the benchmark scripts share: a quiet environment and a scratch folder for stores."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_folder(keep: str | None, prefix: str) -> Iterator[Path]:
    """`keep` (new or empty; left in place) or a temporary folder (removed afterwards). No
    outside tracking server; one torch thread (small models on few cores: the fast setting).
    Exits with status 2 when `keep` is not empty."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import torch

    torch.set_num_threads(1)
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=prefix))
    if folder.exists() and any(folder.iterdir()):
        print(f"{folder}: not empty; give an empty or new folder", file=sys.stderr)
        raise SystemExit(2)
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
