import csv
import os
import sys

import pytest
import torch

# Triton kernels run on CPU tensors only in the interpreter, which must be switched on before
# the kernels are defined (attprune imports them lazily, on first use)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(min(2, torch.get_num_threads()))

# pytester: tests/test_suite_rules.py runs small suites under this conftest's rules
pytest_plugins = ("pytester",)


def pytest_collection_modifyitems(config, items):
    from attprune.models import has_smollm2, smollm2_path

    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    no_llm = pytest.mark.skip(reason=f"SmolLM2 is not in the cache ({smollm2_path()}): run `attprune fetch`")
    for item in items:
        if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if item.get_closest_marker("llm") is not None and not has_smollm2():
            item.add_marker(no_llm)


# -- ATTPRUNE_STRICT=1 (CI, .ci/run): only a missing GPU may skip a test ------------------------
#
# Locally a missing optional piece (onnxruntime, llama_cpp, triton, accelerate, the native op,
# SmolLM2 in the cache, ...) skips the tests that need it.  In CI that would hide a broken
# install as a skip, so with ATTPRUNE_STRICT=1 every skip of a test that is not marked ``gpu``
# (pytest.skip, pytest.importorskip, skip / skipif markers, the ``llm`` marker's skip, a whole
# module skipped at import) is reported as a failure naming what was missing.

STRICT_HINT = "ATTPRUNE_STRICT=1: only tests marked gpu may skip; this one skipped because: "


def _strict() -> bool:
    return os.environ.get("ATTPRUNE_STRICT") == "1"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_the_skip(report) -> None:
    report.outcome = "failed"
    report.longrepr = STRICT_HINT + _skip_reason(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (_strict() and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("gpu") is None):
        _fail_the_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module that skips itself at import (``pytest.importorskip`` at the top) collects no
    test at all: under ATTPRUNE_STRICT=1 that is a collection error."""
    outcome = yield
    report = outcome.get_result()
    if _strict() and report.skipped and collector.get_closest_marker("gpu") is None:
        _fail_the_skip(report)


@pytest.fixture(scope="session")
def float64_model_dir(tmp_path_factory):
    from transformers import AutoTokenizer

    from attprune.models import packaged_minilm_path

    path = tmp_path_factory.mktemp("tiny-bert-64")
    import transformers as tf
    cfg = tf.BertConfig(vocab_size=30522, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, num_labels=2,
                        architectures=["BertForSequenceClassification"])
    torch.manual_seed(0)
    tf.BertForSequenceClassification(cfg).double().save_pretrained(path)
    AutoTokenizer.from_pretrained(packaged_minilm_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def eleven_rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "rows.csv"
    words = ["good", "bad", "fine", "awful", "great", "dull", "superb", "poor", "nice", "weak", "grand"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "text"])
        for i, word in enumerate(words):
            w.writerow([i % 2, " ".join(words[: i % 5 + 1]) + " " + word])
    return path
