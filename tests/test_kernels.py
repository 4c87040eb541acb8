"""Every fast path of the IG step ops against the PyTorch reference, on odd shapes.

Triton kernels run under TRITON_INTERPRET=1 here (tests/conftest.py) and on the GPU where
there is one; the native CPU op runs where it is built (``make native``; CI sets
ATTPRUNE_REQUIRE_NATIVE=1 so that a missing build fails instead of skipping).
"""

import os

import pytest
import torch

import attprune
from attprune import ops
from attprune.ops import native, reference

import tiny

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FAST = ["triton", "native"]


def _need(backend):
    why = ops.unavailable(backend, DEVICE if backend == "triton" else torch.device("cpu"))
    if why is None:
        return
    if backend == "native" and os.environ.get("ATTPRUNE_REQUIRE_NATIVE") == "1":
        pytest.fail(f"ATTPRUNE_REQUIRE_NATIVE=1 but {why}")
    pytest.skip(why)


def _device(backend):
    return DEVICE if backend == "triton" else torch.device("cpu")


def _inputs(steps, rows, tokens, d_out, d_in, *, dtype=torch.float32, device="cpu", seed=0, strided=False):
    g = torch.Generator().manual_seed(seed)
    grads = torch.randn(steps, rows, tokens, d_out, generator=g)
    if strided:  # a non-contiguous view with the same values
        grads = grads.transpose(2, 3).contiguous().transpose(2, 3)
    weight = torch.randn(d_out, d_in, generator=g) / d_out ** 0.5
    x = torch.randn(rows, tokens, d_in, generator=g)
    mask = torch.ones(rows, tokens)
    mask[-1, tokens // 2:] = 0  # a padded example
    step_weights = torch.rand(steps, generator=g)
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return cast(grads), step_weights.to(device), cast(weight), cast(x), mask.to(device)


SHAPES = [  # (steps, rows, tokens, d_out, d_in, unit_size): FFN neurons, power-of-two heads, odd heads
    (3, 2, 7, 13, 10, 1),
    (5, 3, 9, 19, 24, 8),
    (2, 2, 5, 11, 15, 3),
    (4, 1, 70, 37, 130, 1),
    (2, 2, 19, 9, 256, 128),  # heads wider than a feature block: fewer tokens per tile
]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("strided", [False, True])
def test_ig_attribute_matches_reference(backend, shape, strided):
    _need(backend)
    *dims, unit = shape
    grads, w, weight, x, mask = _inputs(*dims, device=_device(backend), strided=strided)
    expected = reference.ig_attribute(grads, w, weight, x, mask, unit)
    got = ops.ig_attribute(grads, w, weight, x, mask, unit, backend=backend)
    assert got.shape == (dims[1], dims[4] // unit) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", FAST)
def test_ig_attribute_accumulates_chunks_of_steps(backend):
    _need(backend)
    grads, w, weight, x, mask = _inputs(6, 2, 7, 13, 12, device=_device(backend))
    expected = reference.ig_attribute(grads, w, weight, x, mask, 4)
    out = ops.ig_attribute(grads[:4], w[:4], weight, x, mask, 4, backend=backend)
    out = ops.ig_attribute(grads[4:], w[4:], weight, x, mask, 4, out=out, backend=backend)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
def test_step_scores_of_every_backend_equal_the_path_that_runs(backend, reduce, shape):
    """``IGStepScores`` is what per-site IG runs: the torch backend (the default) is the reference."""
    _need(backend)
    *dims, unit = shape
    grads, w, weight, x, mask = _inputs(*dims, device=_device(backend), seed=5)

    def scores(name):
        acc = ops.IGStepScores(weight, x, mask, unit, reduce, backend=name)
        for part in range(0, dims[0], 2):  # chunks of two steps
            acc.add(grads[part:part + 2], w[part:part + 2])
        return acc.scores()

    expected = scores("torch")
    torch.testing.assert_close(scores(backend), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_native_op_has_a_fake_implementation_for_tracing():
    _need("native")
    grads, w, weight, x, mask = _inputs(3, 2, 7, 13, 10)
    torch.library.opcheck(torch.ops.attprune.ig_attribute.default, (grads, w, weight, x, mask, 2))
    compiled = torch.compile(lambda *args: torch.ops.attprune.ig_attribute(*args) * 2, fullgraph=True,
                             backend="eager")
    torch.testing.assert_close(compiled(grads, w, weight, x, mask, 2),
                               2 * reference.ig_attribute(grads, w, weight, x, mask, 2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ig_attribute_low_precision_inputs(backend, dtype):
    _need(backend)
    grads, w, weight, x, mask = _inputs(3, 2, 9, 32, 48, dtype=dtype, device=_device(backend))
    expected = reference.ig_attribute(grads, w, weight, x, mask, 16)  # same inputs, float32 arithmetic
    got = ops.ig_attribute(grads, w, weight, x, mask, 16, backend=backend)
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())


@pytest.mark.parametrize("with_bias", [False, True])
def test_ig_interpolate_matches_reference(with_bias):
    _need("triton")
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 7, 21, generator=g).to(DEVICE)
    bias = torch.randn(21, generator=g).to(DEVICE) if with_bias else None
    alphas = torch.tensor([0.1, 0.45, 0.8, 1.0])
    got = ops.ig_interpolate(z, bias, alphas, backend="triton")
    expected = reference.ig_interpolate(z, bias, alphas)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert got.shape == (4 * 3, 7, 21)
    first_node = expected[:3] if bias is None else expected[:3] - bias  # Z_k - b = alpha_k (Z - b)
    torch.testing.assert_close(first_node, 0.1 * (z if bias is None else z - bias))


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("family", ["bert", "llama", "t5", "gpt2"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_attribute_with_fused_backend_equals_torch(backend, family, reduce):
    _need(backend)
    model = tiny.FAMILIES[family](dtype=torch.float32).to(_device(backend))
    batch = {k: v.to(_device(backend)) for k, v in tiny.batch_for(model).items()}
    expected = attprune.attribute(model, [batch], steps=5, reduce_tokens=reduce, backend="torch", progress=False)
    got = attprune.attribute(model, [batch], steps=5, reduce_tokens=reduce, backend=backend, internal_batch_size=6,
                             progress=False)
    assert got.meta["backend"] == backend
    for path, s in expected.sites.items():
        torch.testing.assert_close(got.sites[path].sum, s.sum, rtol=1e-4, atol=1e-5 * s.sum_abs.max().item())


def test_backend_errors_say_what_to_do(monkeypatch):
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        ops.resolve_backend("cuda", cpu, torch.float32)
    with pytest.raises(ValueError, match="not fused.*backend='torch'"):
        ops.resolve_backend("triton", DEVICE, torch.float32, reduce="max")
    with pytest.raises(ValueError, match="float64 is not supported"):
        ops.resolve_backend("triton", DEVICE, torch.float64)
    assert ops.resolve_backend("auto", cpu, torch.float64, reduce="max") == "torch"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="run on CUDA tensors.*TRITON_INTERPRET=1"):
        ops.resolve_backend("triton", cpu, torch.float32)
    assert ops.resolve_backend("auto", cpu, torch.float32) == "torch"  # CPU default: the PyTorch path


def test_attribute_refuses_an_unfused_reduction_on_a_fused_backend():
    _need("native")
    model = tiny.bert_cls(dtype=torch.float32)
    with pytest.raises(ValueError, match="reduce_tokens='max' is not fused"):
        attprune.attribute(model, [tiny.batch_for(model)], reduce_tokens="max", backend="native", progress=False)


def test_native_library_missing_is_a_clear_error(monkeypatch, tmp_path):
    native.load_error.cache_clear()
    monkeypatch.setattr(native, "LIBRARY_DIR", tmp_path)
    monkeypatch.delenv("ATTPRUNE_NATIVE_LIB", raising=False)
    try:
        assert "not built" in native.load_error() and "make native" in native.load_error()
        with pytest.raises(ValueError, match="backend='native' cannot run here.*not built"):
            ops.resolve_backend("native", torch.device("cpu"), torch.float32)
    finally:
        native.load_error.cache_clear()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_attribute_on_gpu_in_low_precision_equals_torch(dtype):
    """The compiled kernels (tensor-core dot) on a low-precision model against the torch path."""
    model = tiny.FAMILIES["llama"](dtype=dtype).cuda()
    batch = {k: v.cuda() for k, v in tiny.batch_for(model).items()}
    expected = attprune.attribute(model, [batch], steps=8, backend="torch", progress=False)
    got = attprune.attribute(model, [batch], steps=8, backend="triton", progress=False)
    for path, s in expected.sites.items():
        torch.testing.assert_close(got.sites[path].sum, s.sum, rtol=3e-2, atol=3e-2 * s.sum_abs.max().item())
