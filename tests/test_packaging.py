"""What gets installed and what ``import attprune`` loads."""

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_every_attprune_package_is_installed_and_no_top_level_kernels():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    installed = set(find_packages(ROOT, include=config["include"]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "attprune").rglob("__init__.py")}
    assert installed == on_disk and "attprune.ops.triton" in installed
    assert not any(p == "kernels" or p.startswith("kernels.") for p in installed)
    assert not (ROOT / "kernels" / "__init__.py").exists()  # native sources only


def test_triton_kernels_live_inside_the_package():
    from transformers.utils import import_utils

    import attprune.ops.triton

    assert Path(attprune.ops.triton.__file__).parent == ROOT / "attprune" / "ops" / "triton"
    # transformers probes for a top-level "kernels" (Hugging Face's, which transformers >= 5.25 depends on):
    # it must never take our kernels/ source folder (a namespace package when the repo root is on sys.path)
    spec = importlib.util.find_spec("kernels")
    found = [] if spec is None else [spec.origin or "", *(spec.submodule_search_locations or [])]
    ours = any(Path(f).resolve().is_relative_to(ROOT / "kernels") for f in found if f)
    assert not (ours and import_utils.is_kernels_available())


def test_the_core_import_is_light():
    """``import attprune`` loads no research harness, plotting, datasets, lm-eval or Triton (extras)."""
    probe = ("import sys, attprune; print(sorted(m for m in sys.modules if m.startswith('attprune.experiments') or m in "
             "('matplotlib', 'datasets', 'triton', 'captum', 'lm_eval', 'onnx', 'gguf', 'llama_cpp')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
