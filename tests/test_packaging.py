"""What gets installed: every attprune package, the Triton kernels as attprune.kernels."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "attprune").rglob("__init__.py")}
    listed = set(config["packages"])
    assert on_disk - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
    assert config["package-dir"]["attprune.kernels"] == "kernels/triton"
    assert (ROOT / "kernels" / "triton" / "__init__.py").is_file()


def test_kernels_install_under_attprune_not_as_a_top_level_package():
    import attprune.kernels
    from transformers.utils import import_utils

    assert Path(attprune.kernels.__file__).parent == ROOT / "kernels" / "triton"
    assert not (ROOT / "kernels" / "__init__.py").exists()  # transformers probes for a "kernels" package
    assert not import_utils.is_kernels_available()
