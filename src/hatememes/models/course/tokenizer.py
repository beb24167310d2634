"""A word-level tokenizer built from the training texts, shared by the course LSTM and Transformer.

Lower-cased words and single punctuation marks; the vocabulary keeps the most frequent words
(at least `min_freq` occurrences, at most `max_size` entries including the specials). Every encoded
text starts with [CLS], so no sequence is empty and the Transformer can pool on position 0.

    tokenizer = WordTokenizer.build(train_texts, min_freq=1, max_size=20000)
    batch = tokenizer(["look how many people love you"], max_length=32)   # input_ids, attention_mask
    tokenizer.save(directory); WordTokenizer.load(directory)                # vocab.json
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import torch

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
WORD = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class WordTokenizer:
    def __init__(self, vocab: list[str]):
        if vocab[:3] != [PAD, UNK, CLS]:
            raise ValueError(f"a vocabulary starts with {PAD}, {UNK}, {CLS}; got {vocab[:3]}")
        self.vocab = vocab
        self.index = {word: i for i, word in enumerate(vocab)}
        self.pad_id, self.unk_id, self.cls_id = 0, 1, 2

    @classmethod
    def build(cls, texts: list[str] | tuple[str, ...], min_freq: int = 1, max_size: int = 20000) -> WordTokenizer:
        counts = Counter(word for text in texts for word in split_words(text))
        ranked = sorted((word for word, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, CLS, *ranked[: max_size - 3]])

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, max_length: int) -> list[int]:
        ids = [self.index.get(word, self.unk_id) for word in split_words(text)]
        return [self.cls_id, *ids[: max_length - 1]]

    def __call__(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        """input_ids (B, T) padded to the longest text, attention_mask (B, T) with 1 on real tokens."""
        encoded = [self.encode(text, max_length) for text in texts]
        longest = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(texts), longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(texts), longest), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def save(self, directory: str | Path) -> None:
        (Path(directory) / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False))

    @classmethod
    def load(cls, directory: str | Path) -> WordTokenizer:
        return cls(json.loads((Path(directory) / "vocab.json").read_text()))
