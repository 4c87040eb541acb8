"""Tiny randomly initialised models of every supported family (odd sizes on purpose)."""

from __future__ import annotations

import torch
import transformers as tf

VOCAB = 97


def _seeded(build):
    def make(dtype=torch.float64, **overrides):
        torch.manual_seed(0)
        model = build(**overrides)
        return model.to(dtype).eval()
    return make


@_seeded
def bert_cls(num_labels=3, **kw):
    cfg = tf.BertConfig(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, num_labels=num_labels, **kw)
    return tf.BertForSequenceClassification(cfg)


@_seeded
def bert_token(num_labels=5):
    cfg = tf.BertConfig(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, num_labels=num_labels)
    return tf.BertForTokenClassification(cfg)


@_seeded
def bert_mlm():
    """A masked LM (its decoder tied to the word embeddings), for cloze probes."""
    cfg = tf.BertConfig(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64)
    return tf.BertForMaskedLM(cfg)


@_seeded
def roberta_cls():
    cfg = tf.RobertaConfig(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                           intermediate_size=29, max_position_embeddings=70, num_labels=2, pad_token_id=1)
    return tf.RobertaForSequenceClassification(cfg)


@_seeded
def electra_cls():
    cfg = tf.ElectraConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=24, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=31, max_position_embeddings=64, num_labels=2)
    return tf.ElectraForSequenceClassification(cfg)


@_seeded
def distilbert_cls():
    cfg = tf.DistilBertConfig(vocab_size=VOCAB, dim=24, n_layers=2, n_heads=4, hidden_dim=35,
                              max_position_embeddings=64, num_labels=2)
    return tf.DistilBertForSequenceClassification(cfg)


@_seeded
def t5(gated=False):
    cfg = tf.T5Config(vocab_size=VOCAB, d_model=20, d_kv=6, d_ff=27, num_layers=2, num_decoder_layers=2,
                      num_heads=3, relative_attention_num_buckets=8,
                      feed_forward_proj="gated-gelu" if gated else "relu", decoder_start_token_id=0,
                      pad_token_id=0, eos_token_id=1)
    return tf.T5ForConditionalGeneration(cfg)


def _llama_like(config_cls, model_cls, **extra):
    cfg = config_cls(vocab_size=VOCAB, hidden_size=24, intermediate_size=33, num_hidden_layers=2,
                     num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                     pad_token_id=0, **extra)
    return model_cls(cfg)


@_seeded
def llama():
    return _llama_like(tf.LlamaConfig, tf.LlamaForCausalLM)


@_seeded
def mistral():
    return _llama_like(tf.MistralConfig, tf.MistralForCausalLM, sliding_window=None)


@_seeded
def qwen2():
    return _llama_like(tf.Qwen2Config, tf.Qwen2ForCausalLM)


@_seeded
def llama_cls():
    cfg = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=24, intermediate_size=33, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, num_labels=3)
    return tf.LlamaForSequenceClassification(cfg)


@_seeded
def gpt2():
    cfg = tf.GPT2Config(vocab_size=VOCAB, n_embd=24, n_layer=2, n_head=4, n_inner=35, n_positions=64)
    return tf.GPT2LMHeadModel(cfg)


FAMILIES = {
    "bert": bert_cls, "roberta": roberta_cls, "electra": electra_cls, "distilbert": distilbert_cls,
    "t5": t5, "t5-gated": lambda **kw: t5(gated=True, **kw), "llama": llama, "mistral": mistral,
    "qwen2": qwen2, "gpt2": gpt2,
}


def batch_for(model, batch_size=3, seq_len=7, seed=1, labels=True):
    """A padded batch (last example shorter) with labels of the right kind for ``model``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch_size, seq_len), generator=g)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    mask[-1, seq_len - 2:] = 0
    pad = getattr(model.config, "pad_token_id", None) or 0
    ids = ids.masked_fill(mask == 0, pad)
    batch = {"input_ids": ids, "attention_mask": mask}
    if not labels:
        return batch
    name = type(model).__name__
    if model.config.is_encoder_decoder:
        lab = torch.randint(3, VOCAB, (batch_size, 5), generator=g)
        lab[-1, 3:] = -100
        batch["labels"] = lab
    elif name.endswith(("ForCausalLM", "LMHeadModel")):
        batch["labels"] = ids.masked_fill(mask == 0, -100)
    elif name.endswith("ForTokenClassification"):
        batch["labels"] = torch.randint(0, model.config.num_labels, (batch_size, seq_len),
                                        generator=g).masked_fill(mask == 0, -100)
    else:
        batch["labels"] = torch.randint(0, model.config.num_labels, (batch_size,), generator=g)
    return batch


class BreaksAt:
    """Batches (with a length) whose reading fails at batch ``index``: an interrupted run."""

    def __init__(self, batches, index):
        self.batches, self.index = batches, index

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for i, batch in enumerate(self.batches):
            if i == self.index:
                raise ZeroDivisionError
            yield batch


TOKENIZER_TEXT = [
    "The quick brown fox jumps over the lazy dog.", "Pruning removes the neurons a task does not need.",
    "Integrated gradients attribute a prediction to every unit along a straight path.",
    "A compact model runs faster: 1,234 tokens in 0.56 s!", "llama.cpp reads GGUF files; ONNX Runtime reads ONNX.",
]


def byte_bpe_tokenizer(vocab_size=320):
    """A small byte-level BPE tokenizer (GPT-2 style, trained here) with <s> and </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TOKENIZER_TEXT * 4, trainer)
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def causal_lm(family="llama", vocab_size=VOCAB, dtype=torch.float32, layers=3, hidden=48):
    """A tiny Llama / Mistral / Qwen2 causal LM with ``layers`` blocks and a given vocabulary."""
    config_cls, model_cls = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
                             "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
                             "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM)}[family]
    extra = {"sliding_window": None} if family == "mistral" else {}
    torch.manual_seed(0)
    cfg = config_cls(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=45, num_hidden_layers=layers,
                     num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
                     pad_token_id=0, tie_word_embeddings=family != "mistral", **extra)
    return model_cls(cfg).to(dtype).eval()
