"""Prompt tasks for decoder LLMs: answer log-likelihoods, perplexity windows, bootstrap
intervals (tiny float64 models, against brute force), and the real SmolLM2 prompt path
(``llm`` marker: skipped when ``attprune fetch`` has not cached the model)."""

import copy

import pytest
import torch

import attprune
from attprune.batches import IGNORE_INDEX, padded
from attprune.errors import InputError
from attprune.experiments.answers import accuracy_per_example, answer_log_likelihoods, text_windows, window_nll
from attprune.experiments.prompts import PromptExample
from attprune.experiments.stats import mean_interval, paired_difference

from tiny import gpt2, llama


def _brute_force(model, example, answer):
    ids = torch.tensor([example.prompt + answer])
    with torch.no_grad():
        log_probs = model(input_ids=ids).logits.double().log_softmax(-1)[0]
    return sum(float(log_probs[len(example.prompt) - 1 + j, token]) for j, token in enumerate(answer))


@pytest.mark.parametrize("build", [llama, gpt2])
def test_answer_log_likelihoods_equal_one_sequence_at_a_time(build):
    model = build()
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    examples = [PromptExample(torch.randint(3, vocab, (n,), generator=generator).tolist(), 0) for n in (5, 9, 2, 7, 4)]
    answers = [[7], [11, 4], [9, 2, 13], [8]]  # one-token answers and longer ones
    fast = answer_log_likelihoods(model, examples, answers, pad=0, batch_size=3)  # batches of mixed lengths
    for i, example in enumerate(examples):
        for label, answer in enumerate(answers):
            assert fast[i, label].item() == pytest.approx(_brute_force(model, example, answer), abs=1e-10)


@pytest.mark.parametrize("build", [llama, gpt2])
def test_accuracy_per_example_is_the_argmax_of_brute_force_log_likelihoods(build):
    """Every example alone and unpadded: log p(prompt + answer) summed over the answer's tokens
    for each label; the most likely label against the gold one must be accuracy_per_example's
    verdict, for prompts of many lengths batched together and answers of 1 to 3 tokens."""
    model = build()  # float64
    generator = torch.Generator().manual_seed(3)
    vocab = model.config.vocab_size
    answers = [[7, 30], [11], [9, 2, 13], [8, 8]]
    lengths = (6, 1, 11, 3, 8, 2, 14, 5, 9, 4, 7, 12)
    prompts = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in lengths]
    brute = torch.tensor([[_brute_force(model, PromptExample(p, 0), a) for a in answers] for p in prompts],
                         dtype=torch.float64)
    best = brute.argmax(1)
    top2 = brute.topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1]).min() > 1e-6  # no near-ties: the argmax is well defined
    gold = [(int(b) + (i % 3 == 0)) % len(answers) for i, b in enumerate(best)]  # a third of them wrong
    examples = [PromptExample(p, g) for p, g in zip(prompts, gold)]
    expected = [int(int(b) == g) for b, g in zip(best, gold)]
    assert 0 < sum(expected) < len(expected)
    fast = answer_log_likelihoods(model, examples, answers, pad=0, batch_size=5)
    torch.testing.assert_close(fast, brute, rtol=0, atol=1e-10)
    assert accuracy_per_example(model, examples, answers, pad=0, batch_size=5) == expected
    with pytest.raises(InputError, match="no examples"):
        accuracy_per_example(model, [], answers, pad=0)


@pytest.mark.parametrize("build", [llama, gpt2])
def test_a_shared_prompt_prefix_runs_once_with_the_same_log_likelihoods(build):
    """Prompts that share a system prompt and question: the prefix's KV cache serves every batch,
    and every answer's log-likelihood equals the whole sequence's, alone and unpadded."""
    model = build()
    generator = torch.Generator().manual_seed(4)
    vocab = model.config.vocab_size
    shared = torch.randint(3, vocab, (6,), generator=generator).tolist()
    examples = [PromptExample(shared + torch.randint(3, vocab, (n,), generator=generator).tolist(), 0)
                for n in (1, 5, 3, 8, 2)] + [PromptExample(shared[:4], 0)]  # one prompt shorter than the prefix
    answers = [[7], [11, 4], [9, 2, 13]]
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a, k: calls.append(k["input_ids"].shape), with_kwargs=True)
    try:
        shared_pass = answer_log_likelihoods(model, examples, answers, pad=0, batch_size=4)
    finally:
        handle.remove()
    assert calls[0] == (1, 3)  # the common prefix (less a token for the shortest prompt) once
    plain = answer_log_likelihoods(model, examples, answers, pad=0, batch_size=4, share_prefix=False)
    brute = torch.tensor([[_brute_force(model, e, a) for a in answers] for e in examples], dtype=torch.float64)
    torch.testing.assert_close(shared_pass, brute, rtol=0, atol=1e-10)
    torch.testing.assert_close(plain, brute, rtol=0, atol=1e-10)


def test_calibration_divides_renormalised_answer_probabilities_by_their_mean():
    model = llama()
    generator = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 97, (n,), generator=generator).tolist() for n in (4, 6, 5, 7, 3, 8, 6, 5)]
    examples = [PromptExample(p, i % 3) for i, p in enumerate(prompts[:6])]
    calibration = [PromptExample(p, 0) for p in prompts[5:]]
    answers = [[7], [11], [19]]
    probs = torch.tensor([[_brute_force(model, e, a) for a in answers] for e in examples + calibration]).exp()
    probs = probs / probs.sum(1, keepdim=True)
    mean = probs[len(examples):].mean(0)
    expected = ((probs[:len(examples)] / mean).argmax(1) == torch.tensor([e.label for e in examples])).int().tolist()
    assert accuracy_per_example(model, examples, answers, pad=0, calibration=calibration) == expected
    uncalibrated = (probs[:len(examples)].argmax(1) == torch.tensor([e.label for e in examples])).int().tolist()
    assert accuracy_per_example(model, examples, answers, pad=0) == uncalibrated


def test_noun_verb_rows_ask_about_one_noun_and_one_verb_per_sentence():
    from attprune.experiments.pack import POS_TAGS
    from attprune.experiments.prompts import noun_verb_rows

    tag = {t: POS_TAGS.index(t) for t in ("NN", "VBZ", "DT", "VBD", "NNS", ".")}
    sentences = [{"words": ["The", "cat", "chases", "the", "mouse", "."],
                  "tags": [tag["DT"], tag["NN"], tag["VBZ"], tag["DT"], tag["NN"], tag["."]]},
                 {"words": ["Dogs", "barked", "."], "tags": [tag["NNS"], tag["VBD"], tag["."]]},
                 {"words": ["It", "is", "."], "tags": [tag["DT"], tag["VBZ"], tag["."]]}]  # no noun: skipped
    rows = noun_verb_rows(sentences, seed=0)
    assert len(rows) == 4 and sorted(r["label"] for r in rows) == [0, 0, 1, 1]
    first = {r["label"]: r["word"] for r in rows[:2]}
    assert first[0] in ("cat", "mouse") and first[1] == "chases"  # "The"/"the" repeat: never asked about
    assert rows[0]["text"] == "The cat chases the mouse." and {r["word"] for r in rows[2:]} == {"Dogs", "barked"}
    assert noun_verb_rows(sentences, seed=0) == rows


def test_window_nll_is_the_models_own_loss():
    model = llama()
    windows = torch.randint(3, model.config.vocab_size, (3, 6), generator=torch.Generator().manual_seed(1))
    nll = window_nll(model, windows, batch_size=2)
    with torch.no_grad():
        expected = [model(input_ids=w[None], labels=w[None]).loss.item() for w in windows]
    torch.testing.assert_close(nll, torch.tensor(expected, dtype=nll.dtype), rtol=1e-6, atol=1e-6)  # HF: float32 loss


class _WordTokenizer:
    """Whitespace words -> ids (a stand-in only for the text -> windows plumbing)."""

    eos_token_id = 1

    def __call__(self, text, add_special_tokens=False):
        return type("Encoded", (), {"input_ids": [2 + len(w) for w in text.split()]})()


def test_text_windows_cut_the_stream_into_equal_windows():
    windows = text_windows(["a bb ccc", "dddd e"], _WordTokenizer(), window=3, n_windows=5)
    assert windows.tolist() == [[3, 4, 5], [1, 6, 3]]  # the eos separator after each text; the rest dropped
    with pytest.raises(InputError, match="fewer than"):
        text_windows(["a"], _WordTokenizer(), window=8)


def test_padding_sides():
    ids, mask = padded([[5, 6], [7]], pad=0, left=True)
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]
    ids, mask = padded([[5, 6], [7]], pad=0)
    assert ids.tolist() == [[5, 6], [7, 0]] and mask.tolist() == [[1, 1], [1, 0]]


def test_interval_edges_and_paired_differences():
    assert mean_interval([1, 1, 1]).to_dict() == {"value": 1.0, "low": 1.0, "high": 1.0}
    same = [1, 0, 1, 1, 0]
    assert paired_difference(same, same).to_dict() == {"value": 0.0, "low": 0.0, "high": 0.0}
    better = paired_difference([1] * 200, [1] * 100 + [0] * 100)
    assert better.excludes_zero() and better.value == pytest.approx(0.5)
    with pytest.raises(InputError, match="same examples"):
        paired_difference([1, 0], [1])
    with pytest.raises(InputError, match="non-empty"):
        mean_interval([])


# -- the real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    from attprune.models import load_smollm2

    return load_smollm2()


@pytest.mark.llm
def test_prompt_batches_label_exactly_the_gold_answer(smollm2):
    from attprune.experiments.prompts import PROMPT_TASKS, answer_ids, attribution_batches, encode_prompts

    _, tokenizer = smollm2
    task = PROMPT_TASKS["bbc"]
    rows = [{"text": "Shares rose after the bank reported record profits.", "label": 0},
            {"text": "The striker scored twice in the cup final.", "label": 3}]
    examples = encode_prompts(rows, tokenizer, task)
    assert tokenizer.decode(examples[0].prompt).endswith("<|im_start|>assistant\n" + task.prefill)
    assert all(len(a) == 1 for a in answer_ids(task, tokenizer))  # one token per answer: exact answer-set targets
    (batch,) = attribution_batches(examples, tokenizer, task, batch_size=2)
    for row, example in enumerate(examples):
        labelled = batch["labels"][row] != IGNORE_INDEX
        assert tokenizer.decode(batch["labels"][row][labelled]) == task.answers[example.label]
        assert labelled.nonzero().min() == len(example.prompt)
        assert batch["attention_mask"][row].sum() == len(example.prompt) + len(answer_ids(task, tokenizer)[example.label])


@pytest.mark.llm
@pytest.mark.slow
def test_smollm2_prompt_attribution_compacts_and_reloads(smollm2, tmp_path):
    from attprune.experiments.prompts import PROMPT_TASKS, attribution_batches, encode_prompts

    model, tokenizer = smollm2
    task = PROMPT_TASKS["bbc"]
    examples = encode_prompts([{"text": "The striker scored twice.", "label": 3}], tokenizer, task)
    batches = attribution_batches(examples, tokenizer, task)
    scores = attprune.attribute(model, batches, method="ig", steps=2, progress=False)
    assert scores.n_examples == 1 and len(scores.ffn) == 30 and len(scores.heads) == 30
    plan = attprune.make_plan(scores, ffn=0.2, heads=0.34)
    ids = batches[0]["input_ids"]
    small = attprune.compact(copy.deepcopy(model), plan)
    attprune.save_pretrained(small, tmp_path / "small")
    # compared in float64: in float32 a 30-layer model's logits differ by ~1e-4 from summation order alone
    wide = copy.deepcopy(model).double()
    with torch.no_grad(), attprune.mask(wide, plan):
        masked = wide(input_ids=ids).logits
    reloaded = attprune.from_pretrained(tmp_path / "small", torch_dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, masked, rtol=1e-9, atol=1e-9)
    assert sum(p.numel() for p in reloaded.parameters()) < sum(p.numel() for p in model.parameters())


def test_unknown_prompt_task_is_refused_by_name():
    from attprune.experiments.llm import LLMTask

    with pytest.raises(InputError, match="unknown prompt task 'nope'.*mr, bbc, nounverb, tweets, hedge, spam"):
        LLMTask.of(llama(), None, "nope")
