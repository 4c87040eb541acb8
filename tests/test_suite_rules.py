"""The suite's own rules (tests/conftest.py): with ATTPRUNE_STRICT=1 (CI) a skip of any test
not marked ``gpu`` fails, naming what was missing; without it, the same tests skip."""

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

BROKEN = '''
import sys

import pytest

sys.modules["onnxruntime"] = None  # a broken install: importing it raises ImportError


def test_needs_onnxruntime():
    pytest.importorskip("onnxruntime")


@pytest.mark.skipif(True, reason="the native op is not built")
def test_skipif_marker():
    pass


@pytest.mark.llm
def test_needs_smollm2():
    pass


@pytest.mark.gpu
def test_on_a_gpu():
    pytest.skip("needs a CUDA device")


@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False


def test_runs():
    pass
'''

WHOLE_MODULE = '''
import sys

import pytest

sys.modules["llama_cpp"] = None
llama_cpp = pytest.importorskip("llama_cpp")


def test_never_collected():
    pass
'''


@pytest.fixture()
def suite(pytester, monkeypatch, tmp_path):
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    gpu: g\n    llm: l\n    slow: s\n")
    pytester.makepyfile(test_broken=BROKEN, test_whole_module=WHOLE_MODULE)
    monkeypatch.setenv("ATTPRUNE_CACHE", str(tmp_path / "empty-cache"))  # no SmolLM2 there
    return pytester


def test_strict_turns_every_skip_but_a_gpu_ones_into_a_failure(suite, monkeypatch):
    monkeypatch.setenv("ATTPRUNE_STRICT", "1")
    result = suite.runpytest_subprocess("-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors")
    result.assert_outcomes(passed=1, failed=1, errors=3, skipped=1, xfailed=1)
    out = result.stdout.str()
    assert result.ret != 0
    for missing in ("could not import 'onnxruntime'", "the native op is not built", "SmolLM2 is not in the cache",
                    "could not import 'llama_cpp'"):
        assert f"ATTPRUNE_STRICT=1: only tests marked gpu may skip; this one skipped because: {missing}" in out, missing
    assert "SKIPPED [1] test_broken.py" in out and "needs a CUDA device" in out  # the gpu test still skips


def test_without_strict_the_same_tests_skip(suite, monkeypatch):
    monkeypatch.delenv("ATTPRUNE_STRICT", raising=False)
    result = suite.runpytest_subprocess("-rA", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    assert result.ret == 0
