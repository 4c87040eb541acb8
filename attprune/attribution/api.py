"""``attribute()``: score every FFN neuron and attention head of a model on a task's data."""

from __future__ import annotations

import time
from typing import Callable, Iterable, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import ops
from ..sites import Site, find_embeddings, find_sites
from . import allsites, datafree, ig
from .quadrature import QUADRATURES, quadrature
from .runner import Runner, attribution_mode
from .scores import Scores, SiteScores
from .tokens import REDUCTIONS

METHODS = ("ig", "conductance", "grad_x_act", "fisher", "activation", "magnitude", "random")
DATA_FREE = ("magnitude", "random")
BASELINES = ("zero",)
#: Without ``batch_size``, one forward/backward pass holds at most this many tokens
#: (examples x steps x sequence length).
TOKEN_BUDGET = 1 << 16


def _validate(method, steps, quadrature_name, baseline, reduce_tokens, units) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if quadrature_name not in QUADRATURES:
        raise ValueError(f"unknown quadrature {quadrature_name!r}; choose one of {', '.join(QUADRATURES)}")
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; supported: {', '.join(BASELINES)}")
    if reduce_tokens not in REDUCTIONS:
        raise ValueError(f"unknown reduce_tokens {reduce_tokens!r}; choose one of {', '.join(REDUCTIONS)}")
    if method == "fisher" and reduce_tokens != "sum":
        raise ValueError("method='fisher' is the squared gradient of a unit mask, a sum over tokens: "
                         "use reduce_tokens='sum'")
    if isinstance(units, str):
        raise ValueError(f"units must be a tuple such as ('ffn', 'heads'), got the string {units!r}")


def attribute(
    model: nn.Module,
    batches: Iterable[dict] | None,
    *,
    units: tuple[str, ...] = ("ffn", "heads"),
    method: str = "ig",
    steps: int = 20,
    quadrature: str = "riemann_right",
    target: Union[str, Callable] = "label",
    baseline: str = "zero",
    reduce_tokens: str = "sum",
    dtype: torch.dtype | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    seed: int = 0,
    backend: str = "auto",
) -> Scores:
    """Attribution scores of every FFN neuron and attention head of ``model``.

    >>> loader = DataLoader(dataset, batch_size=16, collate_fn=collator)   # dicts of tensors
    >>> scores = attprune.attribute(model, loader, method="ig", steps=20)
    >>> scores.ffn["bert.encoder.layer.5.output.dense"]     # signed mean IG per neuron
    >>> scores.heads["bert.encoder.layer.5.attention.output.dense"]   # per query head

    Args:
        model: a Hugging Face transformer of a registered family (``find_sites``).
        batches: iterable of dicts of tensors as the model takes them (``input_ids``,
            ``attention_mask``, ``labels``, ``decoder_input_ids``...); ``None`` for the
            data-free methods.
        units: ``"ffn"`` (intermediate neurons) and/or ``"heads"`` (query heads).
        method: ``"ig"`` (per-site integrated gradients, the core), ``"conductance"``,
            ``"grad_x_act"``, ``"fisher"``, ``"activation"``, ``"magnitude"``, ``"random"``.
        steps: quadrature nodes of the IG / conductance path (Captum's ``n_steps``).
        quadrature: node rule, as Captum names it (see ``attprune.attribution.quadrature``).
        target: ``"label"``, ``"prediction"`` or ``callable(outputs, batch) -> Tensor[batch]``.
        baseline: ``"zero"``: the site input (conductance: the embeddings) scaled from 0.
        reduce_tokens: ``"sum"``, ``"mean"`` or ``"max"`` over real (non-padding) tokens.
        dtype: compute the model's forward/backward in this dtype (autocast); scores
            always accumulate in float32 (float64 for a float64 model).
        batch_size: interpolation rows (examples x steps) per forward/backward pass, like
            Captum's ``internal_batch_size``; default: as many steps as fit in
            ``TOKEN_BUDGET`` tokens.
        progress: show a tqdm bar.
        seed: seed of ``method="random"``.
        backend: how ``method="ig"`` does its step arithmetic (``attprune.ops``):
            ``"torch"`` (reference), ``"triton"`` (fused kernels, CUDA), ``"native"``
            (the CMake-built CPU op) or ``"auto"`` (Triton on CUDA, else torch).

    Returns:
        ``Scores``: per site, the signed mean, mean of absolutes, spread and count of the
        per-example unit scores.
    """
    _validate(method, steps, quadrature, baseline, reduce_tokens, units)
    sites = find_sites(model, units)
    parameter = next(model.parameters())
    backend = ops.resolve_backend(backend, parameter.device, dtype or parameter.dtype, reduce_tokens)
    meta = dict(method=method, steps=steps, quadrature=quadrature, target=target if isinstance(target, str)
                else getattr(target, "__name__", "callable"), baseline=baseline, reduce_tokens=reduce_tokens,
                units=list(units), model_class=type(model).__name__,
                model_name=getattr(model.config, "name_or_path", ""), dtype=str(dtype) if dtype else None,
                backend=backend,
                kv_heads={s.path: s.n_kv_heads for s in sites if s.n_kv_heads and s.n_kv_heads < s.n_units})
    started = time.perf_counter()
    if method in DATA_FREE:
        scores = _data_free(model, sites, method, seed)
    else:
        if batches is None:
            raise ValueError(f"method={method!r} needs data: pass an iterable of batches")
        scores = _data_driven(model, sites, batches, method=method, steps=steps, quadrature_name=quadrature,
                              target=target, reduce=reduce_tokens, dtype=dtype, batch_size=batch_size,
                              progress=progress, backend=backend)
    meta.update(n_examples=scores.n_examples, seconds=round(time.perf_counter() - started, 3))
    scores.meta = meta
    return scores


def _data_free(model: nn.Module, sites: list[Site], method: str, seed: int) -> Scores:
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for site in sites:
        value = datafree.magnitude(model, site) if method == "magnitude" else datafree.random(site, generator)
        stats = SiteScores.zeros(site.kind, site.n_units)
        stats.add(value[None])
        out[site.path] = stats
    return Scores(out)


def _data_driven(model, sites, batches, *, method, steps, quadrature_name, target, reduce, dtype, batch_size,
                 progress, backend) -> Scores:
    needs_embeddings = method in ("conductance", "grad_x_act", "fisher")
    record = set(find_embeddings(model)) if needs_embeddings else set()
    runner = Runner(model, sites, target, dtype=dtype, replay_sites=method == "ig", record=record)
    if method == "ig":
        alphas, weights = quadrature(quadrature_name, steps)
    elif method == "conductance":
        alphas, weights = quadrature(quadrature_name, steps + 1)
    stats = {s.path: SiteScores.zeros(s.kind, s.n_units, runner.acc_dtype) for s in sites}
    total = len(batches) if hasattr(batches, "__len__") else None
    bar = tqdm(total=None if total is None else total * (len(sites) if method == "ig" else 1),
               disable=not progress, desc=f"attribution ({method})", unit="site" if method == "ig" else "batch")
    with attribution_mode(model):
        for batch in batches:
            clean = runner.prepare(batch)
            tokens = max(v.shape[1] for v in clean.inputs.values() if torch.is_tensor(v) and v.dim() > 1)
            n_nodes = len(alphas) if method in ("ig", "conductance") else 1
            chunk = ig.steps_per_pass(n_nodes, clean.rows, tokens, batch_size, TOKEN_BUDGET)
            if method == "ig":
                for site in sites:
                    bar.set_postfix_str(site.path, refresh=False)
                    stats[site.path].add(ig.ig_site(runner, clean, site, alphas, weights, reduce=reduce,
                                                                  chunk=chunk, backend=backend))
                    bar.update(1)
                continue
            if method == "conductance":
                per_site = allsites.conductance(runner, clean, alphas, reduce=reduce, chunk=chunk)
            elif method == "grad_x_act":
                per_site = allsites.grad_x_act(runner, clean, reduce=reduce)
            elif method == "fisher":
                per_site = allsites.fisher(runner, clean)
            else:
                per_site = allsites.activation(runner, clean, reduce=reduce)
            for path, value in per_site.items():
                stats[path].add(value)
            bar.update(1)
    bar.close()
    if not any(s.count for s in stats.values()):
        raise ValueError("no examples: `batches` yielded nothing")
    return Scores({p: SiteScores(s.kind, s.sum.float(), s.sum_abs.float(), s.sum_sq.float(), s.count)
                   if runner.acc_dtype != torch.float64 else s for p, s in stats.items()})
