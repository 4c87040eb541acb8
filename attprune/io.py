"""Files attprune writes appear whole or not at all: write to a temporary name, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On failure the temporary file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_format_json(file: Path, expected_format: str, error: type[Exception], missing: str,
                     rewrite: str) -> dict:
    """A JSON file that must carry ``"format": expected_format``; ``error`` says what is wrong.

    ``missing``: the message when the file does not exist; ``rewrite``: how to make a good one.
    """
    if not file.is_file():
        raise error(missing)
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise error(f"{file} is truncated or damaged ({err}); {rewrite}") from err
    found = data.get("format") if isinstance(data, dict) else None
    if found != expected_format:
        raise error(f"{file} has format {found!r}, expected {expected_format!r}")
    return data


def json_digest(obj, length: int = 16) -> str:
    """A short, stable hash of a JSON-able value (dict keys sorted): keys for caches and runs."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def write_json(path: str | Path, obj) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole.

    An existing folder is swapped out only once the new one is complete, and put back if
    the swap fails; on failure the temporary folder is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def tensors_digest(named_tensors) -> str:
    """SHA-256 of ``(name, tensor)`` pairs: each name, then the tensor's values as float32 bytes
    (integer tensors as int64). Equal for equal values in any dtype that holds them exactly;
    any changed value changes it.

    >>> tensors_digest(model.named_parameters())
    """
    digest = hashlib.sha256()
    for name, tensor in named_tensors:
        digest.update(name.encode())
        values = tensor.detach()
        values = values.float() if values.is_floating_point() else values.long()
        digest.update(values.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
