"""Bad input gets one clear message naming the cause and the fix."""

import pytest
import torch

import attprune

import tiny


@pytest.fixture(scope="module")
def model():
    return tiny.bert_cls(dtype=torch.float32)


@pytest.fixture()
def batch(model):
    return tiny.batch_for(model)


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(steps=2.5), "steps must be an integer >= 1"),
    (dict(method="shap"), "unknown method 'shap'"),
    (dict(quadrature="simpson"), "unknown quadrature 'simpson'"),
    (dict(reduce_tokens="median"), "unknown reduce_tokens"),
    (dict(units="ffn"), "must be a tuple"),
    (dict(units=("neurons",)), "units must be a non-empty subset"),
    (dict(target="logits"), "target must be 'label', 'prediction' or a callable"),
    (dict(quadrature="riemann_trapezoid", steps=1), "riemann_trapezoid needs steps >= 2"),
])
def test_bad_arguments(model, batch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attprune.attribute(model, [batch], progress=False, **kwargs)


def test_unknown_setting_is_a_type_error_naming_it(model, batch):
    with pytest.raises(TypeError, match="unexpected keyword argument.*smoothing"):
        attprune.attribute(model, [batch], progress=False, smoothing="blur")
    with pytest.raises(attprune.InputError, match="unknown baseline 'blur'; choose one of zero, mean"):
        attprune.attribute(model, [batch], progress=False, baseline="blur")


def test_missing_labels_for_label_target(model, batch):
    batch.pop("labels")
    with pytest.raises(ValueError, match="target='label' needs a 'labels' entry.*target='prediction'"):
        attprune.attribute(model, [batch], steps=2, progress=False)


def test_labels_out_of_range(model, batch):
    batch["labels"] = torch.tensor([0, 1, 3])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*got values from 0 to 3"):
        attprune.attribute(model, [batch], steps=2, progress=False)
    token_model = tiny.bert_token(dtype=torch.float32)
    token_batch = tiny.batch_for(token_model)
    token_batch["labels"][0, 0] = -5
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        attprune.attribute(token_model, [token_batch], steps=2, progress=False)


def test_empty_inputs(model, batch):
    with pytest.raises(ValueError, match="no examples"):
        attprune.attribute(model, [], steps=2, progress=False)
    with pytest.raises(ValueError, match="empty batch"):
        attprune.attribute(model, [{k: v[:0] for k, v in batch.items()}], steps=2, progress=False)
    with pytest.raises(ValueError, match="needs input_ids"):
        attprune.attribute(model, [{"labels": batch["labels"]}], steps=2, progress=False)
    with pytest.raises(TypeError, match="dict of tensors"):
        attprune.attribute(model, [batch["input_ids"]], steps=2, progress=False)


def test_headless_model_needs_a_callable_target():
    base = tiny.bert_cls(dtype=torch.float32).bert
    batch = tiny.batch_for(tiny.bert_cls(), labels=False)
    with pytest.raises(ValueError, match="needs a model with a task head"):
        attprune.attribute(base, [batch], target="prediction", steps=2, progress=False)
    scores = attprune.attribute(base, [batch], target=lambda out, b: out.last_hidden_state[:, 0].norm(dim=-1),
                                steps=2, progress=False)
    assert scores.n_examples == 3


def test_tokens_outside_the_vocabulary(model, batch):
    batch["input_ids"][0, 1] = model.config.vocab_size + 3
    with pytest.raises(ValueError, match="outside the model's vocabulary of 97: the tokenizer does not match"):
        attprune.attribute(model, [batch], steps=2, progress=False)


def test_inputs_longer_than_the_positions_truncate_or_refuse(model):
    long = tiny.batch_for(model, seq_len=70)  # 64 positions
    with pytest.raises(ValueError, match="70 tokens are longer than the model's 64 positions"):
        attprune.attribute(model, [long], steps=2, long_inputs="error", progress=False)
    with pytest.warns(UserWarning, match="truncated to the model's 64 positions"):
        truncated = attprune.attribute(model, [long], steps=2, progress=False)
    short = {k: v[:, :64] if v.dim() == 2 else v for k, v in long.items()}
    reference = attprune.attribute(model, [short], steps=2, progress=False)
    for path, s in reference.sites.items():
        assert torch.equal(s.sum, truncated.sites[path].sum)
    with pytest.raises(ValueError, match="unknown long_inputs"):
        attprune.attribute(model, [long], steps=2, long_inputs="wrap", progress=False)
