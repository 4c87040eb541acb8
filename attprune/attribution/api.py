"""``attribute()``: score every FFN neuron and attention head of a model on a task's data."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Callable, Iterable, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import devices, ops
from ..sites import Site, find_embeddings, find_sites
from . import allsites, datafree, distributed, ig
from .inputs import LONG_INPUTS, check_batch
from .memory import token_budget
from .partial import PartialRun, run_key
from .quadrature import QUADRATURES, quadrature
from .runner import Runner, attribution_mode
from .scores import Scores, SiteScores
from .tokens import REDUCTIONS

METHODS = ("ig", "conductance", "grad_x_act", "fisher", "activation", "magnitude", "random")
DATA_FREE = ("magnitude", "random")
BASELINES = ("zero",)


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
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
    long_inputs: str = "truncate",
    max_memory: int | str | None = None,
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
            Captum's ``internal_batch_size``; default: as many steps as fit the memory budget.
        max_memory: that budget (bytes or ``"8GB"``); default: half the free memory of the
            model's CUDA device, or ``TOKEN_BUDGET`` tokens on CPU (``attribution.memory``).
            A CUDA out-of-memory error halves the steps per pass and retries.
        progress: show a tqdm bar.
        seed: seed of ``method="random"``.
        backend: how ``method="ig"`` does its step arithmetic (``attprune.ops``):
            ``"torch"`` (reference), ``"triton"`` (fused kernels, CUDA), ``"native"``
            (the CMake-built CPU op) or ``"auto"`` (Triton on CUDA, else torch).
        long_inputs: inputs longer than the model's positions are ``"truncate"``-d (with a
            warning) or refused (``"error"``); token ids outside the vocabulary always are.
        checkpoint: a folder for partial sums, saved every ``checkpoint_every`` scored
            batches; a run interrupted at any point (even SIGKILL) and started again with
            the same settings and data resumes there (``attprune.attribution.partial``).
            Removed when the run completes.

    Inside an initialised ``torch.distributed`` process group (torchrun), each rank scores
    its share of the batches and the sums are all-reduced once at the end: pass every
    rank the same, unsharded batches (``attprune.attribution.distributed``).

    Returns:
        ``Scores``: per site, the signed mean, mean of absolutes, spread and count of the
        per-example unit scores.
    """
    _validate(method, steps, quadrature, baseline, reduce_tokens, units)
    if long_inputs not in LONG_INPUTS:
        raise ValueError(f"unknown long_inputs {long_inputs!r}; choose one of {', '.join(LONG_INPUTS)}")
    sites = find_sites(model, units)
    devices.check_offload_layout(model)
    backend = ops.resolve_backend(backend, devices.input_device(model), dtype or next(model.parameters()).dtype,
                                  reduce_tokens)
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
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        partial = None
        if checkpoint is not None:
            settings = {k: meta[k] for k in ("method", "steps", "quadrature", "target", "reduce_tokens", "units",
                                             "model_class", "model_name", "dtype")}
            settings.update(sites=[(s.path, s.n_units) for s in sites], batch_size=batch_size,
                            long_inputs=long_inputs)
            partial = PartialRun(checkpoint, run_key(settings), *distributed.rank_and_size())
        scores = _data_driven(model, sites, batches, method=method, steps=steps, quadrature_name=quadrature,
                              target=target, reduce=reduce_tokens, dtype=dtype, batch_size=batch_size,
                              progress=progress, backend=backend, partial=partial,
                              checkpoint_every=checkpoint_every, long_inputs=long_inputs, max_memory=max_memory)
    meta.update(n_examples=scores.n_examples, seconds=round(time.perf_counter() - started, 3),
                world_size=distributed.rank_and_size()[1])
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


def _all_sites(runner, clean, method, alphas, reduce, chunk) -> dict[str, torch.Tensor]:
    """Per-example scores of every site from one batch, for the methods that do all sites at once."""
    if method == "conductance":
        return allsites.conductance(runner, clean, alphas, reduce=reduce, chunk=chunk)
    if method == "grad_x_act":
        return allsites.grad_x_act(runner, clean, reduce=reduce)
    if method == "fisher":
        return allsites.fisher(runner, clean)
    return allsites.activation(runner, clean, reduce=reduce)


def _reduced(stats: dict[str, SiteScores]) -> dict[str, SiteScores]:
    """Sums and counts of every rank (a no-op outside a process group)."""
    if distributed.rank_and_size()[1] == 1:
        return stats
    paths = list(stats)
    tensors = [t for p in paths for t in (stats[p].sum, stats[p].sum_abs, stats[p].sum_sq)]
    counts = torch.tensor([float(stats[p].count) for p in paths], dtype=torch.float64)
    *summed, counts = distributed.all_reduce_sums(tensors + [counts])
    return {p: SiteScores(stats[p].kind, *summed[3 * i:3 * i + 3], int(counts[i])) for i, p in enumerate(paths)}


def _data_driven(model, sites, batches, *, method, steps, quadrature_name, target, reduce, dtype, batch_size,
                 progress, backend, partial: PartialRun | None = None, checkpoint_every: int = 10,
                 long_inputs: str = "truncate", max_memory: int | str | None = None) -> Scores:
    needs_embeddings = method in ("conductance", "grad_x_act", "fisher")
    record = set(find_embeddings(model)) if needs_embeddings else set()
    runner = Runner(model, sites, target, dtype=dtype, replay_sites=method == "ig", record=record)
    alphas = weights = None
    if method == "ig":
        alphas, weights = quadrature(quadrature_name, steps)
    elif method == "conductance":
        alphas, weights = quadrature(quadrature_name, steps + 1)
    stats = {s.path: SiteScores.zeros(s.kind, s.n_units, runner.acc_dtype) for s in sites}
    resumed = partial.load() if partial is not None else None
    start = 0
    if resumed is not None:
        start = resumed[1]
        stats = {p: SiteScores(s.kind, s.sum.to(runner.acc_dtype), s.sum_abs.to(runner.acc_dtype),
                               s.sum_sq.to(runner.acc_dtype), s.count) for p, s in resumed[0].items()}
    rank, world = distributed.rank_and_size()
    total = len(batches) if hasattr(batches, "__len__") else None
    per_batch = len(sites) if method == "ig" else 1
    bar = tqdm(total=None if total is None else -(-total // world) * per_batch,
               initial=-(-start // world) * per_batch if total is not None else 0, disable=not progress or rank != 0,
               desc=f"attribution ({method})", unit="site" if method == "ig" else "batch")
    scored = 0
    with attribution_mode(model):
        for index, batch in enumerate(batches):
            if index < start or not distributed.mine(index):
                continue  # scored before an interruption, or another rank's share
            clean = runner.prepare(check_batch(model, batch, long_inputs))
            tokens = max(v.shape[1] for v in clean.inputs.values() if torch.is_tensor(v) and v.dim() > 1)
            n_nodes = len(alphas) if method in ("ig", "conductance") else 1
            chunk = ig.steps_per_pass(n_nodes, clean.rows, tokens, batch_size,
                                      token_budget(model, max_memory, dtype, tokens))
            if method == "ig":
                for site in sites:
                    bar.set_postfix_str(site.path, refresh=False)
                    run = functools.partial(ig.ig_site, runner, clean, site, alphas, weights, reduce=reduce,
                                            backend=backend)
                    stats[site.path].add(ig.halving_on_oom(lambda c: run(chunk=c), chunk))
                    bar.update(1)
            else:
                for path, value in _all_sites(runner, clean, method, alphas, reduce, chunk).items():
                    stats[path].add(value)
                bar.update(1)
            scored += 1
            if partial is not None and scored % checkpoint_every == 0:
                partial.save(stats, next_batch=index + 1)
    bar.close()
    stats = _reduced(stats)
    if not any(s.count for s in stats.values()):
        raise ValueError("no examples: `batches` yielded nothing")
    if partial is not None:
        partial.clear()
    return Scores({p: SiteScores(s.kind, s.sum.float(), s.sum_abs.float(), s.sum_sq.float(), s.count)
                   if runner.acc_dtype != torch.float64 else s for p, s in stats.items()})
