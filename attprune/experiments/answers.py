"""Our fast scorer of a causal LM on prompt tasks (answer log-likelihood, one prompt pass and
the KV cache for the answers' later tokens) and on plain text (perplexity).  It gives
lm-evaluation-harness's log-likelihoods on the same token sequences (``lm_eval.py``;
tested), faster.

>>> scores = answer_log_likelihoods(model, examples, answer_ids(task, tokenizer), pad_id(tokenizer))
>>> correct = (scores.argmax(1) == gold).tolist()               # per example, for intervals
>>> perplexity(model, windows)                                   # exp(mean token NLL)
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from ..errors import InputError
from ..batches import padded
from .prompts import PromptExample


@torch.no_grad()
def answer_log_likelihoods(model: nn.Module, examples: list[PromptExample], answers: list[list[int]], pad: int,
                           batch_size: int = 16, share_prefix: bool = True) -> torch.Tensor:
    """[examples, labels]: log p(answer tokens | prompt), summed over each answer's tokens.

    The prompts' longest common prefix (the system prompt, the question's start) runs once and
    its KV cache serves every batch (``share_prefix``); each batch's rest of the prompts runs
    left-padded after it, so one pass gives every answer's first token, and an answer of more
    tokens continues from that pass's KV cache with its own tokens only.
    """
    if not examples:
        raise InputError("no examples to evaluate")
    out = torch.zeros(len(examples), len(answers), dtype=torch.float64)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt))  # similar lengths batch together
    device = next(model.parameters()).device
    longest = max(len(a) for a in answers)
    shared = _common_prefix([e.prompt for e in examples]) if share_prefix else 0
    prefix = model(input_ids=torch.tensor([examples[0].prompt[:shared]], device=device), use_cache=True,
                   logits_to_keep=1).past_key_values if shared else None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        ids, mask = padded([examples[i].prompt[shared:] for i in rows], pad, left=True)
        ids, mask = ids.to(device), mask.to(device)
        positions = shared + (mask.cumsum(1) - 1).clamp_min(0)
        if prefix is not None:
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(len(rows))
            mask = torch.cat([torch.ones(len(rows), shared, dtype=mask.dtype, device=device), mask], 1)
            step = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1,
                         **with_cache(model, cache))
        else:
            step = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=longest > 1,
                         logits_to_keep=1)
        first = step.logits[:, -1].double().log_softmax(-1).cpu()
        cache = step.past_key_values
        for label, tokens in enumerate(answers):
            out[rows, label] = first[:, tokens[0]]
            if len(tokens) == 1:
                continue
            rest = torch.tensor(tokens, device=device)[None].expand(len(rows), -1)
            more = model(input_ids=rest[:, :-1], **with_cache(model, cache),
                         attention_mask=torch.cat([mask, torch.ones_like(rest[:, :-1])], 1),
                         position_ids=positions[:, -1:] + torch.arange(1, len(tokens), device=device))
            later = more.logits.double().log_softmax(-1).cpu()
            out[rows, label] += later.gather(2, rest[:, 1:, None].cpu()).squeeze(2).sum(1)
            cache.crop(-(len(tokens) - 1))  # back to the prompt for the next answer
    return out


def _common_prefix(prompts: list[list[int]]) -> int:
    """The length of the prompts' longest common prefix, less one token (every prompt keeps at
    least one of its own for the pass that reads the answers)."""
    first, shared = prompts[0], min(len(p) for p in prompts) - 1
    for prompt in prompts[1:]:
        same = 0
        while same < shared and prompt[same] == first[same]:
            same += 1
        shared = same
    return max(shared, 0)


def with_cache(model: nn.Module, cache) -> dict:
    """The keyword arguments that continue from a KV cache (``cache`` in newer transformers,
    ``past_key_values`` before)."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: cache, "use_cache": True}


def calibration_bias(model: nn.Module, examples: list[PromptExample], answers: list[list[int]], pad: int,
                     batch_size: int = 16) -> torch.Tensor | None:
    """[labels]: the log of the answers' probabilities (renormalised over the answers) averaged
    over ``examples`` (a task's calibration prompts); None without them.  A function of the
    model: recomputed for every model evaluated."""
    if not examples:
        return None
    scores = answer_log_likelihoods(model, examples, answers, pad, batch_size)
    return scores.log_softmax(1).exp().mean(0).log()


def accuracy_per_example(model: nn.Module, examples: list[PromptExample], answers: list[list[int]], pad: int,
                         batch_size: int = 16, calibration: list[PromptExample] | None = None) -> list[int]:
    """1 where the most likely answer is the gold label's, else 0 (one entry per example); with
    ``calibration`` prompts, the answers' probabilities (renormalised over the answers) divided
    by their mean over those prompts (``calibration_bias``)."""
    scores = answer_log_likelihoods(model, examples, answers, pad, batch_size).log_softmax(1)
    bias = calibration_bias(model, calibration or [], answers, pad, batch_size)
    if bias is not None:
        scores = scores - bias
    gold = torch.tensor([e.label for e in examples])
    return (scores.argmax(1) == gold).int().tolist()


def text_windows(texts: list[str], tokenizer, window: int = 128, n_windows: int = 32) -> torch.Tensor:
    """[n_windows, window] token ids of consecutive texts (separated by end-of-sequence), no padding."""
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False).input_ids + separator
        if len(stream) >= window * n_windows:
            break
    n = min(n_windows, len(stream) // window)
    if n == 0:
        raise InputError(f"the texts hold fewer than {window} tokens")
    return torch.tensor(stream[:n * window]).view(n, window)


@torch.no_grad()
def window_nll(model: nn.Module, windows: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """[windows]: the mean negative log-likelihood of each window's tokens (the first one is given)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start:start + batch_size].to(device)
        logits = model(input_ids=ids, use_cache=False).logits.double()
        nll = nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        out.append(nll.mean(1).cpu())
    return torch.cat(out)


def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 8) -> float:
    """exp of the mean token NLL over equal-length windows."""
    return float(window_nll(model, windows, batch_size).mean().exp())
