"""The JSON file of an adapted task folder: its name, format tag and reader (read by the config
loader and the store alike)."""

from __future__ import annotations

from pathlib import Path

from ..errors import AdaptedMismatchError
from ..io import read_format_json

TASK_FILE = "attprune_adapted.json"
OLD_TASK_FILE = "adapter_config.json"  # read only, when TASK_FILE is absent
FORMAT = "attprune.adapted/1"


def read_task_file(path: Path) -> dict:
    """The task folder's JSON (``attprune_adapted.json``, else an older ``adapter_config.json``)."""
    file = path / TASK_FILE
    if not file.is_file() and (path / OLD_TASK_FILE).is_file():
        file = path / OLD_TASK_FILE
    return read_format_json(file, FORMAT, AdaptedMismatchError,
                            f"{path} is not an adapted task folder (no {TASK_FILE}); write one with "
                            "attprune.adapt(...).save(path) or attprune adapt --out", "save the task again")
