"""``attribute()``: score every FFN neuron and attention head of a model on a task's data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import devices, ops
from ..errors import InputError, ResumeMismatchError
from ..settings import check_int
from ..sites import Site, find_embeddings, find_sites
from . import distributed
from .config import AttributionConfig
from .inputs import check_batch
from .means import input_means
from .memory import nodes_per_pass, token_budget
from .methods import Method, method_class
from .resume import DataDigest, PartialRun
from .runner import Runner, attribution_mode
from .scores import Scores, SiteScores


def attribute(model: nn.Module, batches: Iterable[dict] | None, config: AttributionConfig | None = None, *,
              progress: bool = True, resume_dir: str | Path | None = None, save_every: int = 10,
              **settings) -> Scores:
    """Attribution scores of every FFN neuron and attention head of ``model``.

    >>> loader = DataLoader(dataset, batch_size=16, collate_fn=collator)   # dicts of tensors
    >>> scores = attprune.attribute(model, loader, method="ig", steps=20)
    >>> scores = attprune.attribute(model, loader, AttributionConfig(method="ig", steps=20))   # the same
    >>> scores.ffn["bert.encoder.layer.5.output.dense"]     # signed mean IG per neuron
    >>> scores.heads["bert.encoder.layer.5.attention.output.dense"]   # per query head

    Args:
        model: a Hugging Face transformer of a registered family (``find_sites``).
        batches: iterable of dicts of tensors as the model takes them (``input_ids``,
            ``attention_mask``, ``labels``, ``decoder_input_ids``...); ``None`` for the
            data-free methods.
        config: the run's settings (``AttributionConfig``); keyword ``settings`` override
            its fields (or the defaults):

            - ``method``: a registered method (``attprune.attribution.METHODS``): ``"ig"``
              (per-site integrated gradients, the core), ``"conductance"``, ``"grad_x_act"``,
              ``"fisher"``, ``"activation"``, ``"wanda"``, ``"flap"`` (LLM-pruning criteria from
              per-feature statistics over all calibration tokens), ``"magnitude"``, ``"random"``.
            - ``units``: ``("ffn", "heads")`` or one of them.
            - ``steps`` / ``quadrature``: nodes and rule of the integration path (Captum's
              ``n_steps`` / ``method``; ``attprune.attribution.quadrature``).
            - ``target``: ``"label"``, ``"prediction"`` or ``callable(outputs, batch) -> Tensor[batch]``.
            - ``reduce_tokens``: ``"sum"``, ``"mean"`` or ``"max"`` over real (non-padding) tokens.
            - ``dtype``: compute the model's forward/backward in this dtype (autocast); scores
              accumulate in float32 (float64 for a float64 model).
            - ``backend``: the IG step arithmetic (``attprune.ops``): ``"torch"``, ``"triton"``,
              ``"native"`` or ``"auto"``.
            - ``internal_batch_size``: interpolation rows (examples x nodes) per pass, as
              Captum's; default: what fits ``memory_budget`` (bytes or ``"8GB"``; default:
              half the free memory of the model's GPU, or ``TOKEN_BUDGET`` tokens on CPU). A
              CUDA out-of-memory error halves the nodes per pass and retries.
            - ``seed`` (``method="random"``), ``long_inputs`` (``"truncate"`` with a warning,
              or ``"error"``; token ids outside the vocabulary are always refused).
        progress: show a tqdm bar.
        resume_dir: a folder for partial sums, saved every ``save_every`` scored batches; a
            run interrupted at any point (even SIGKILL) and started again with the same
            settings, weights and data resumes there (``attprune.attribution.resume``).
            Removed when the run completes.

    Inside an initialised ``torch.distributed`` process group (torchrun), each rank scores
    its share of the batches and the sums are all-reduced once at the end: pass every
    rank the same, unsharded batches (``attprune.attribution.distributed``).

    Returns:
        ``Scores``: per site, the signed mean, mean of absolutes, spread and count of the
        per-example unit scores; ``scores.meta`` records the settings and the run.
    """
    config = AttributionConfig.build(config, settings).for_model(model)
    sites = find_sites(model, config.units)
    devices.check_offload_layout(model)
    config = config.replace(backend=ops.resolve_backend(config.backend, devices.input_device(model),
                                                        config.dtype or next(model.parameters()).dtype,
                                                        config.reduce_tokens))
    method = method_class(config.method)(config)
    started = time.perf_counter()
    if method.needs_data:
        if batches is None:
            raise InputError(f"method={config.method!r} needs data: pass an iterable of batches")
        if method.needs_input_means:
            if iter(batches) is batches:
                raise InputError("baseline='mean' reads the data twice (the means first): pass a list or a "
                                 "DataLoader, not an iterator")
            method.input_means = input_means(model, batches, sites=sites, long_inputs=config.long_inputs)
        scores = _data_driven(model, sites, batches, method, progress, _partial(model, sites, batches, config,
                                                                                   resume_dir, save_every),
                              save_every)
    else:
        scores = Scores({p: _stats_of(sites, p, v[None]) for p, v in
                         method.score_without_data(model, sites).items()})
    scores.meta = dict(config.to_dict(), model_class=type(model).__name__,
                       model_name=getattr(model.config, "name_or_path", ""),
                       kv_heads={s.path: s.n_kv_heads for s in sites if s.n_kv_heads and s.n_kv_heads < s.n_units},
                       n_examples=scores.n_examples, seconds=round(time.perf_counter() - started, 3),
                       world_size=distributed.rank_and_size()[1], **method.statistics())
    scores.input_means = method.input_means
    return scores


def _stats_of(sites: list[Site], path: str, per_example: torch.Tensor) -> SiteScores:
    site = next(s for s in sites if s.path == path)
    stats = SiteScores.zeros(site.kind, site.n_units, per_example.dtype)
    stats.add(per_example)
    return stats


def _partial(model, sites, batches, config: AttributionConfig, resume_dir, save_every) -> PartialRun | None:
    check_int("save_every", save_every)
    if resume_dir is None:
        return None
    settings = dict(config.result_settings(), sites=[(s.path, s.n_units) for s in sites],
                    model_class=type(model).__name__)
    n_batches = len(batches) if hasattr(batches, "__len__") else None
    return PartialRun(resume_dir, settings, model, n_batches, *distributed.rank_and_size())


def _reduced(stats: dict[str, SiteScores]) -> dict[str, SiteScores]:
    """Sums and counts of every rank (a no-op outside a process group)."""
    if distributed.rank_and_size()[1] == 1:
        return stats
    paths = list(stats)
    tensors = [t for p in paths for t in (stats[p].sum, stats[p].sum_abs, stats[p].sum_sq)]
    counts = torch.tensor([float(stats[p].count) for p in paths], dtype=torch.float64)
    *summed, counts = distributed.all_reduce_sums(tensors + [counts])
    return {p: SiteScores(stats[p].kind, *summed[3 * i:3 * i + 3], int(counts[i])) for i, p in enumerate(paths)}


def _check_resumed_shapes(resumed: dict[str, SiteScores], fresh: dict[str, SiteScores], folder: Path) -> None:
    """Refuse partial sums of other widths than the method accumulates (another attprune version's)."""
    shapes = lambda stats: {p: tuple(s.sum.shape) for p, s in stats.items()}  # noqa: E731
    if shapes(resumed) != shapes(fresh):
        raise ResumeMismatchError(f"the partial run in {folder} holds sums of other shapes than this method "
                                  "accumulates now (another attprune version?); delete it or choose another folder")


def _data_driven(model: nn.Module, sites: list[Site], batches, method: Method, progress: bool,
                 partial: PartialRun | None, save_every: int) -> Scores:
    config = method.config
    record = set(find_embeddings(model)) if method.records_embeddings else set()
    runner = Runner(model, sites, config.target, dtype=config.dtype, replay_sites=method.replays_sites, record=record,
                    cut_after_targets=method.follows_gradient and config.reduce_tokens == "sum")
    dtype = method.accumulator_dtype or runner.acc_dtype
    stats = {s.path: SiteScores.zeros(s.kind, method.accumulator_size(s), dtype) for s in sites}
    resumed = partial.load() if partial is not None else None
    start = 0
    if resumed is not None:
        start = resumed.next_batch
        _check_resumed_shapes(resumed.sites, stats, partial.folder)
        stats = {p: SiteScores(s.kind, s.sum.to(dtype), s.sum_abs.to(dtype), s.sum_sq.to(dtype), s.count)
                 for p, s in resumed.sites.items()}
    read = DataDigest()
    rank, world = distributed.rank_and_size()
    total = len(batches) if hasattr(batches, "__len__") else None
    bar = tqdm(total=None if total is None else -(-total // world) * len(sites),
               initial=-(-start // world) * len(sites) if total is not None else 0,
               disable=not progress or rank != 0, desc=f"attribution ({config.method})", unit="site")
    scored = 0
    with attribution_mode(model):
        for index, batch in enumerate(batches):
            if partial is not None:
                if index == start and resumed is not None:
                    partial.check_data(resumed, read)
                read.add(batch)
            if index < start or not distributed.mine(index):
                continue  # scored before an interruption, or another rank's share
            clean = runner.prepare(check_batch(model, batch, config.long_inputs))
            tokens = max(v.shape[1] for v in clean.inputs.values() if torch.is_tensor(v) and v.dim() > 1)
            chunk = nodes_per_pass(method.max_nodes(), clean.rows, tokens, config.internal_batch_size,
                                   token_budget(model, config.memory_budget, config.dtype, tokens))
            for path, value in method.score_batch(runner, clean, chunk):
                stats[path].add(value)
                bar.set_postfix_str(path, refresh=False)
                bar.update(1)
            scored += 1
            if partial is not None and scored % save_every == 0:
                partial.save(stats, next_batch=index + 1, data=read)
    bar.close()
    if resumed is not None and read.batches <= start:
        partial.check_data(resumed, read)  # the data ended before the resume point
    stats = _reduced(stats)
    if not any(s.count for s in stats.values()):
        raise InputError("no examples: `batches` yielded nothing")
    stats = method.finish(runner, stats)
    if partial is not None:
        partial.clear()
    return Scores({p: SiteScores(s.kind, s.sum.float(), s.sum_abs.float(), s.sum_sq.float(), s.count)
                   if runner.acc_dtype != torch.float64 else s for p, s in stats.items()})
