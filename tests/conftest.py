import csv
import os
import sys

import pytest
import torch

# Triton kernels run on CPU tensors only in the interpreter, which must be switched on before
# the kernels are defined (attprune imports them lazily, on first use)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    from attprune.models import has_smollm2, smollm2_path

    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    no_llm = pytest.mark.skip(reason=f"SmolLM2 is not in the cache ({smollm2_path()}): run `attprune fetch`")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "llm" in item.keywords and not has_smollm2():
            item.add_marker(no_llm)


@pytest.fixture(scope="session")
def float64_model_dir(tmp_path_factory):
    from transformers import AutoTokenizer

    from attprune.models import packaged_minilm_path

    path = tmp_path_factory.mktemp("tiny-bert-64")
    import transformers as tf
    cfg = tf.BertConfig(vocab_size=30522, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, num_labels=2,
                        architectures=["BertForSequenceClassification"])
    torch.manual_seed(0)
    tf.BertForSequenceClassification(cfg).double().save_pretrained(path)
    AutoTokenizer.from_pretrained(packaged_minilm_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def eleven_rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "rows.csv"
    words = ["good", "bad", "fine", "awful", "great", "dull", "superb", "poor", "nice", "weak", "grand"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "text"])
        for i, word in enumerate(words):
            w.writerow([i % 2, " ".join(words[: i % 5 + 1]) + " " + word])
    return path
