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
