"""Running a model for attribution: the clean pass, tiled m-step passes, and the objective F."""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import align_module_device
from torch import nn

from .. import devices
from ..batches import CHOICES_KEY, IGNORE_INDEX, NOT_MODEL_INPUTS, batch_rows, slice_batch, tile_batch, truncate_tokens
from ..errors import InputError, InputTypeError, UnsupportedModelError
from ..sites import Site, first_token_tail, weight_out_in
from . import objective, replay
from .tokens import PositionsSpec, select_positions, token_mask


@dataclass
class Clean:
    """What one clean forward pass of a batch leaves for the attribution passes."""

    inputs: dict            # model keyword arguments (no labels)
    objective_batch: dict   # inputs + the labels F scores (gold or predicted)
    rows: int
    site_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    site_outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    log: replay.CallLog | None = None
    #: causal LMs: the positions whose logits F reads (None: all), passed as ``logits_to_keep``
    logit_positions: torch.Tensor | None = None
    #: F(x) of every example on the clean input
    value: torch.Tensor | None = None
    #: the batch as it was passed (on the device, labels and any ``attribution_positions`` kept,
    #: not cut): what ``positions`` reads
    batch: dict | None = None
    #: [rows, input tokens] bool: the positions chosen by ``positions`` among the real tokens
    #: (``Runner.select_positions``); None: every real token
    positions: torch.Tensor | None = None


@contextlib.contextmanager
def attribution_mode(model: nn.Module):
    """eval() and no parameter gradients for the duration; both restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


class Runner:
    """Calls one model for attribution: builds inputs, runs passes, computes F per row."""

    def __init__(self, model: nn.Module, sites: list[Site], target, *, dtype: torch.dtype | None,
                 replay_sites: bool, record: set[str] = frozenset(), max_new_tokens: int = 32,
                 cut_after_targets: bool = False):
        self.model = model
        self.sites = sites
        self.target = objective.resolve(target)
        self.device = devices.input_device(model)
        param_dtype = next(model.parameters()).dtype
        self.acc_dtype = torch.float64 if param_dtype == torch.float64 else torch.float32
        self.autocast = dtype is not None and dtype != param_dtype
        self.dtype = dtype
        self.replay_sites = replay_sites
        self.record_modules = set(record)
        self.flat: set[str] = set()  # sites whose module sees the tokens flattened (``by_token``)
        self.max_new_tokens = max_new_tokens
        self._probe: tuple[list, dict] | None = None  # (structure, batch-major leaves per call)
        self._needed: set[tuple[str, int]] = set()
        self._per_site: dict[str, set[tuple[str, int]]] = {}
        self._use_cache = getattr(model.config, "use_cache", None) is not None
        # causal LMs: tokens after the last labelled one cannot change F (cut them, when the token
        # reduction is a sum: their scores are exactly 0), and only labelled positions need logits
        causal_labels = objective.task_of(model) == "causal" and self.target in objective.LABEL_TARGETS
        self.cut_after_targets = cut_after_targets and causal_labels
        self.keeps_logits = objective.task_of(model) == "causal" and not callable(self.target) and \
            "logits_to_keep" in inspect.signature(model.forward).parameters
        # sequence classifiers that read the first token: (last block, its position-wise tail),
        # run on that token only above the sites below that block (checked in _probe_structure)
        reads_first = objective.task_of(model) == "sequence" and not callable(self.target)
        self.tail = first_token_tail(model) if reads_first and replay_sites else None

    # -- model calls ---------------------------------------------------------------------

    def precision(self):
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def forward(self, inputs: dict, logit_positions: torch.Tensor | None = None) -> Any:
        kwargs = dict(inputs)
        if self._use_cache:
            kwargs.setdefault("use_cache", False)
        if logit_positions is not None:
            kwargs["logits_to_keep"] = logit_positions
        with self.precision():
            return self.model(**kwargs)

    def objective(self, outputs: Any, batch: dict, logit_positions: torch.Tensor | None = None) -> torch.Tensor:
        if callable(self.target):
            value = self.target(outputs, batch)
            if not torch.is_tensor(value) or value.dim() != 1 or value.shape[0] != batch_rows(batch):
                raise InputError("a callable target must return a 1-D tensor with one value per example")
            return value.to(self.acc_dtype)
        return objective.value_of(self.model, self.target, objective.logits_of(outputs), batch["labels"],
                                  self.acc_dtype, logit_positions, batch.get(CHOICES_KEY))

    def pass_objective(self, clean: Clean, times: int) -> torch.Tensor:
        """F of every row of one pass over ``times`` copies of the batch (step-major), under
        whatever forward replacements are active."""
        outputs = self.forward(tile_batch(clean.inputs, times), clean.logit_positions)
        return self.objective(outputs, tile_batch(clean.objective_batch, times), clean.logit_positions)

    # -- inputs --------------------------------------------------------------------------

    def _split(self, batch: dict) -> tuple[dict, dict, torch.Tensor | None]:
        """(the batch on the device, the model's inputs: no labels or positions, the labels)."""
        if not isinstance(batch, dict):
            raise InputTypeError("each batch must be a dict of tensors (as a model takes them), got "
                                 f"{type(batch).__name__}")
        given = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        inputs = {k: v for k, v in given.items() if k not in NOT_MODEL_INPUTS}
        if "input_ids" not in inputs and "inputs_embeds" not in inputs:
            raise InputError("a batch needs input_ids (or inputs_embeds)")
        if batch_rows(inputs) == 0:
            raise InputError("empty batch: it has 0 examples")
        return given, inputs, given.get("labels")

    def _decoder_inputs(self, inputs: dict, labels: torch.Tensor | None) -> tuple[dict, torch.Tensor | None]:
        """Encoder-decoder: teacher-force the labels, or generate when there are none."""
        if not getattr(self.model.config, "is_encoder_decoder", False) or "decoder_input_ids" in inputs:
            return inputs, labels
        if labels is not None:
            prepare = getattr(self.model, "prepare_decoder_input_ids_from_labels", None)
            ids = prepare(labels=labels) if prepare is not None else self.model._shift_right(labels)
            return dict(inputs, decoder_input_ids=ids), labels
        if self.target != "prediction":
            raise InputError("an encoder-decoder model needs labels or decoder_input_ids for target="
                             f"{self.target!r}; pass labels, or use target='prediction'")
        with torch.no_grad(), self.precision():
            generated = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                            num_beams=1)
        pseudo = generated[:, 1:].clone()
        eos = getattr(self.model.config, "eos_token_id", None)
        if eos is not None:  # ignore what follows the first end-of-sequence token
            after = (pseudo == eos).long().cumsum(1) - (pseudo == eos).long() > 0
            pseudo = pseudo.masked_fill(after, IGNORE_INDEX)
        return dict(inputs, decoder_input_ids=generated[:, :-1]), pseudo

    # -- the clean pass ------------------------------------------------------------------

    def _probe_structure(self, inputs: dict) -> None:
        """Learn the call structure and which recorded outputs are batch-major (1 vs 2 rows)."""
        one = slice_batch(inputs, slice(0, 1))
        with torch.no_grad(), replay.record_calls(self.model, keep=lambda n, i: True) as log_one:
            self.forward(one)
        with torch.no_grad(), replay.record_calls(self.model, keep=lambda n, i: True) as log_two:
            self.forward(tile_batch(one, 2))
        batch_major = {key: replay.batch_major_leaves(replay.leading_sizes(out),
                                                      replay.leading_sizes(log_two.outputs.get(key)))
                       for key, out in log_one.outputs.items()}
        self._per_site = {s.path: set(replay.calls_before(log_one, s.path)) for s in self.sites}
        self._needed = set().union(*self._per_site.values()) if self._per_site else set()
        self._probe = (log_one.structure(), batch_major)
        if self.tail is not None and not self._first_token_suffices(inputs):
            self.tail = None

    def _first_token_suffices(self, inputs: dict) -> bool:
        """Whether the logits stay the same with the last block's tail cut to the first token
        (a head declared as reading it, e.g. BERT's pooler, but replaced by one that reads more
        fails this and runs uncut)."""
        with torch.no_grad():
            full = objective.logits_of(self.forward(inputs)).float()
            with replay.replaced_forwards(self.model, {self.tail[1]: first_token_only}):
                cut = objective.logits_of(self.forward(inputs)).float()
        if full.shape != cut.shape:
            return False
        dtype = self.dtype if self.autocast else next(self.model.parameters()).dtype
        tolerance = min(1e3 * torch.finfo(dtype).eps, 1e-2) * (1 + float(full.abs().max()))
        return float((full - cut).abs().max()) <= tolerance

    def prepare(self, batch: dict, _reprobed: bool = False) -> Clean:
        """The clean pass: site inputs/outputs, recorded calls, F(x) and the labels F uses."""
        given, inputs, labels = self._split(batch)
        inputs, labels = self._decoder_inputs(inputs, labels)
        if self.cut_after_targets and labels is not None:
            inputs, labels = _cut_after_last_label(inputs, labels)
        rows = batch_rows(inputs)
        if self.replay_sites and self._probe is None:
            self._probe_structure(inputs)
        clean = Clean(inputs=inputs, objective_batch={}, rows=rows, batch=given)
        needed, recorded = self._needed, self.record_modules
        keep = lambda name, index: (name, index) in needed or name in recorded  # noqa: E731
        hooks = [self._capture(site, clean) for site in self.sites]
        try:
            with torch.no_grad(), replay.record_calls(self.model, keep=keep) as log:
                outputs = self.forward(inputs)
        finally:
            for h in hooks:
                h.remove()
        if self.replay_sites and log.structure() != self._probe[0]:
            if _reprobed:
                raise UnsupportedModelError("the model calls its modules in a different order on every forward pass; "
                                   "per-site IG cannot replay it (use method='conductance' or 'grad_x_act')")
            self._probe_structure(inputs)  # a batch that takes another path: learn it again
            return self.prepare(batch, _reprobed=True)
        clean.log = log
        clean.objective_batch = dict(inputs, labels=self._labels_for_objective(outputs, inputs, labels))
        if CHOICES_KEY in given:
            clean.objective_batch[CHOICES_KEY] = given[CHOICES_KEY]
        clean.value = self.objective(outputs, clean.objective_batch).detach()
        if self.keeps_logits:
            clean.logit_positions = _labelled_logit_positions(clean.objective_batch["labels"])
        return clean

    def _labels_for_objective(self, outputs, inputs: dict, labels: torch.Tensor | None):
        if callable(self.target):
            return labels
        logits = objective.logits_of(outputs)
        if self.target in objective.LABEL_TARGETS:
            if labels is None:
                raise InputError(f"target={self.target!r} needs a 'labels' entry in every batch; pass labels or use "
                                 "target='prediction' (the model's own predictions, no labels needed)")
            objective.check_labels(self.model, logits, labels)
            return labels
        with_labels = dict(inputs, labels=labels) if labels is not None else inputs
        return objective.predicted_labels(self.model, logits.detach(), with_labels)

    def site_weight(self, site: Site, device: torch.device) -> torch.Tensor:
        """The site projection's [out, in] weight on ``device`` (an offloaded one read from its store)."""
        projection = site.module(self.model)
        with align_module_device(projection):
            return weight_out_in(projection).detach().to(device)

    def token_mask(self, clean: Clean, site: Site) -> torch.Tensor:
        """[rows, tokens] bool: the real tokens ``site`` sees in this batch, those chosen by
        ``positions`` only once ``select_positions`` has run."""
        mask = token_mask(clean.objective_batch, site.stream, clean.site_inputs[site.path].shape[1], clean.rows)
        return mask if clean.positions is None else mask & clean.positions.to(mask.device)

    def interpolation_mask(self, clean: Clean, site: Site) -> torch.Tensor | None:
        """[rows, tokens] bool: where per-site IG interpolates the site (the chosen real tokens);
        None: everywhere (``positions="all"``)."""
        return None if clean.positions is None else self.token_mask(clean, site)

    def select_positions(self, clean: Clean, positions: PositionsSpec) -> None:
        """Restrict ``clean`` to the ``positions`` choice (``attribution/tokens.py``): sets
        ``clean.positions``; nothing for ``"all"`` or when already set.

        The choice is made on the batch as it was passed, before a causal LM's batch is cut
        after its last labelled token, then cut the same way (a cut position cannot change F:
        its scores are exactly 0), so every choice is exact under the cut.
        """
        if positions == "all" or clean.positions is not None:
            return
        n_tokens = _tokens(clean.batch)
        labels = clean.objective_batch.get("labels")
        if torch.is_tensor(labels) and labels.dim() == 2 and labels.shape[1] < n_tokens:  # the cut: no labels after
            labels = torch.nn.functional.pad(labels, (0, n_tokens - labels.shape[1]), value=IGNORE_INDEX)
        chosen = select_positions(positions, self.model, clean.batch, labels, objective.task_of(self.model) == "causal",
                                  clean.rows, n_tokens)
        clean.positions = chosen[:, :_tokens(clean.inputs)]

    def _capture(self, site: Site, clean: Clean):
        def hook(module, args, output):
            clean.site_inputs[site.path] = self.by_token(site, args[0].detach(), clean.rows)
            clean.site_outputs[site.path] = self.by_token(site, output.detach(), clean.rows)
        return self.model.get_submodule(site.path).register_forward_hook(hook)

    def by_token(self, site: Site, t: torch.Tensor, rows: int) -> torch.Tensor:
        """A site tensor as [rows, tokens, features]: some families (OPT) run their FFN on the
        tokens flattened, [rows * tokens, features]; those sites are remembered so that what
        replaces their output is flattened the same way (``as_called``)."""
        if t.dim() != 2:
            return t
        self.flat.add(site.path)
        return t.view(rows, -1, t.shape[-1])

    def as_called(self, site: Site, t: torch.Tensor) -> torch.Tensor:
        """A [rows, tokens, features] tensor in the shape ``site``'s module exchanges with the model."""
        return t.reshape(-1, t.shape[-1]) if site.path in self.flat else t

    def output_replacement(self, site: Site, output: torch.Tensor):
        """A forward replacement of ``site``'s module that returns ``output`` ([rows, tokens, features])."""
        output = self.as_called(site, output)
        return lambda original, args, kwargs: output

    # -- replays -------------------------------------------------------------------------

    def replacements_above(self, clean: Clean, site: Site, times: int) -> dict:
        """Forward replacements so that a pass computes only what lies above ``site``."""
        replaced = self._per_site[site.path]
        plan = replay.replay_plan(clean.log, replaced, clean.log.outputs, self._probe[1], times)
        if self.tail is not None and not site.path.startswith(self.tail[0] + "."):
            plan[self.tail[1]] = first_token_only
        return plan

    def value_with_site_outputs(self, clean: Clean, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """F of every example with each site's output replaced (e.g. the site off: its bias);
        one site: the layers below it replayed, several: the whole model run."""
        replacements = {}
        if len(outputs) == 1:
            replacements = self.replacements_above(clean, next(s for s in self.sites if s.path in outputs), 1)
        for site in self.sites:
            if site.path in outputs:
                replacements[site.path] = self.output_replacement(site, outputs[site.path])
        with torch.no_grad(), replay.replaced_forwards(self.model, replacements):
            return self.pass_objective(clean, 1)

    def select_rows(self, clean: Clean, rows: torch.Tensor) -> Clean:
        """The clean pass of the examples ``rows`` only (recorded outputs sliced where they are
        batch-major), for refining some examples of a batch."""
        batch_major = self._probe[1] if self._probe is not None else {}
        outputs = {key: replay.map_tensors(value, lambda i, t, key=key: t[rows] if i in batch_major.get(key, ())
                                           else t) for key, value in clean.log.outputs.items()}
        return Clean(inputs=slice_batch(clean.inputs, rows), objective_batch=slice_batch(clean.objective_batch, rows),
                     rows=int(rows.numel()), site_inputs={p: t[rows] for p, t in clean.site_inputs.items()},
                     site_outputs={p: t[rows] for p, t in clean.site_outputs.items()},
                     log=replay.CallLog(clean.log.calls, outputs), logit_positions=clean.logit_positions,
                     value=clean.value[rows], batch=None if clean.batch is None else slice_batch(clean.batch, rows),
                     positions=None if clean.positions is None else clean.positions[rows])


def first_token_only(original, args: tuple, kwargs: dict) -> Any:
    """A forward replacement: the module run on the first token of every tensor it is given."""
    def cut(value):
        return value[:, :1] if torch.is_tensor(value) and value.dim() >= 2 else value
    return original(*map(cut, args), **{name: cut(value) for name, value in kwargs.items()})


def _cut_after_last_label(inputs: dict, labels: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """A causal LM's batch cut after its last labelled token (later tokens cannot change F)."""
    labelled = (labels != IGNORE_INDEX).any(0).nonzero()
    length = int(labelled.max()) + 1 if labelled.numel() else 1
    if length >= labels.shape[1]:
        return inputs, labels
    return truncate_tokens(inputs, length), labels[:, :length]


def _labelled_logit_positions(labels: torch.Tensor) -> torch.Tensor | None:
    """Positions t whose logits predict a label (labels[:, t + 1] scored in any row); None: all."""
    positions = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().flatten()
    return None if positions.numel() == labels.shape[1] - 1 else positions.to(labels.device)


def _tokens(batch: dict) -> int:
    """The length of the input token sequence."""
    return (batch["input_ids"] if "input_ids" in batch else batch["inputs_embeds"]).shape[1]
