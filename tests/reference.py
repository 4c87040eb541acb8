"""Independent reference implementations the fast paths are tested against.

Nothing here imports attprune's attribution internals: the objective, the masks and the
integration loop are written again, plainly.
"""

from __future__ import annotations

import torch


def objective(model, outputs, labels):
    """Per-example sum of log p(label), written from the task definitions."""
    logits = outputs.logits.double()
    name = type(model).__name__
    if logits.dim() == 2:
        return torch.log_softmax(logits, -1)[torch.arange(len(labels)), labels]
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        logits, labels = logits[:, :-1], labels[:, 1:]
    logp = torch.log_softmax(logits, -1)
    total = torch.zeros(logits.shape[0], dtype=torch.float64)
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            if labels[b, t] != -100:
                total[b] += logp[b, t, labels[b, t]]
    return total


def model_kwargs(model, batch):
    kwargs = {k: v for k, v in batch.items() if k != "labels"}
    if model.config.is_encoder_decoder:
        kwargs["decoder_input_ids"] = model._shift_right(batch["labels"])
    return kwargs


def real_tokens(model, batch, site_stream):
    if site_stream == "decoder":
        return batch["labels"] != -100
    return batch["attention_mask"].bool()


def site_input(model, site_path, batch):
    captured = {}
    handle = model.get_submodule(site_path).register_forward_pre_hook(
        lambda m, args: captured.setdefault("x", args[0].detach().clone()))
    with torch.no_grad():
        model(**model_kwargs(model, batch))
    handle.remove()
    return captured["x"]


def brute_force_ig(model, batch, site, alphas, weights, reduce="sum"):
    """Per-example IG of one site: one full forward/backward per step, no tricks."""
    x = site_input(model, site.path, batch)
    total_grad = torch.zeros_like(x)
    for alpha, weight in zip(alphas, weights):
        scaled = (alpha * x).requires_grad_(True)
        handle = model.get_submodule(site.path).register_forward_pre_hook(lambda m, args: (scaled,))
        outputs = model(**model_kwargs(model, batch))
        handle.remove()
        f = objective(model, outputs, batch["labels"]).sum()
        (grad,) = torch.autograd.grad(f, scaled)
        total_grad += weight * grad
    return reduce_units(x * total_grad, site, real_tokens(model, batch, site.stream), reduce)


def reduce_units(attr, site, mask, reduce="sum"):
    b, t, _ = attr.shape
    per_token = attr.reshape(b, t, site.n_units, site.unit_size).sum(-1)
    out = torch.zeros(b, site.n_units, dtype=attr.dtype)
    for i in range(b):
        rows = per_token[i][mask[i]]
        out[i] = {"sum": rows.sum(0), "mean": rows.mean(0), "max": rows.max(0).values}[reduce]
    return out


def objective_with_site(model, batch, site_path, replacement):
    """F(x) with the site's input replaced (e.g. by zeros, for completeness)."""
    handle = model.get_submodule(site_path).register_forward_pre_hook(lambda m, args: (replacement,))
    with torch.no_grad():
        outputs = model(**model_kwargs(model, batch))
    handle.remove()
    return objective(model, outputs, batch["labels"])


def site_mean(model, site, batches):
    """The mean input feature vector of a site over the real tokens of ``batches``."""
    total, count = 0, 0
    for batch in batches:
        x = site_input(model, site.path, batch)
        mask = real_tokens(model, batch, site.stream)
        total = total + x[mask].sum(0)
        count += int(mask.sum())
    return total / count


def brute_force_joint_ig(model, batch, sites, alphas, weights, starts=None, objective_fn=None):
    """IG along ONE path for several sites: every site's input held at start + alpha (x - start)
    of its clean value at once, one full forward/backward per step; per-example unit scores."""
    objective_fn = objective_fn or (lambda outputs: objective(model, outputs, batch["labels"]))
    xs = {s.path: site_input(model, s.path, batch) for s in sites}
    starts = starts or {s.path: torch.zeros(xs[s.path].shape[-1], dtype=xs[s.path].dtype) for s in sites}
    grads = {p: torch.zeros_like(x) for p, x in xs.items()}
    for alpha, weight in zip(alphas, weights):
        scaled = {p: (starts[p] + alpha * (x - starts[p])).requires_grad_(True) for p, x in xs.items()}
        handles = [model.get_submodule(p).register_forward_pre_hook(lambda m, args, t=t: (t,))
                   for p, t in scaled.items()]
        outputs = model(**model_kwargs(model, batch))
        for h in handles:
            h.remove()
        f = objective_fn(outputs).sum()
        found = torch.autograd.grad(f, list(scaled.values()))
        for p, g in zip(scaled, found):
            grads[p] += weight * g
    return {s.path: reduce_units((xs[s.path] - starts[s.path]) * grads[s.path], s,
                                 real_tokens(model, batch, s.stream)) for s in sites}


def answer_objective(model, outputs, labels, choices, target):
    """The gold answer against the others at the position that predicts the first labelled token
    (causal LM) or over the classes (classifier): "normalized" or "margin"."""
    logits = outputs.logits.double()
    out = torch.zeros(logits.shape[0], dtype=torch.float64)
    for b in range(logits.shape[0]):
        if logits.dim() == 2:
            logp, gold, options = torch.log_softmax(logits[b], -1), int(labels[b]), list(range(logits.shape[-1]))
        else:
            t = next(t for t in range(1, labels.shape[1]) if labels[b, t] != -100)
            logp = torch.log_softmax(logits[b, t - 1], -1)
            gold, options = int(labels[b, t]), [int(c) for c in choices[b]]
        values = torch.stack([logp[c] for c in options])
        if target == "normalized":
            out[b] = logp[gold] - torch.logsumexp(values, 0)
        else:
            out[b] = logp[gold] - torch.stack([logp[c] for c in options if c != gold]).max()
    return out
