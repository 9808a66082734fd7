"""Task metrics: the GLUE set, Rouge-L, exact match of a final number, perplexity."""

from __future__ import annotations

import math
import re
import unicodedata

import numpy as np


def accuracy(preds, labels) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    return float((preds == labels).mean()) if len(labels) else float("nan")


def f1_binary(preds, labels) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, zero_division=0))


def matthews(preds, labels) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


def pearson(preds, labels) -> float:
    from scipy.stats import pearsonr

    preds, labels = np.asarray(preds, dtype=float), np.asarray(labels, dtype=float)
    if np.std(preds) == 0 or np.std(labels) == 0:
        return 0.0
    return float(pearsonr(preds, labels)[0])


def spearman(preds, labels) -> float:
    from scipy.stats import spearmanr

    preds, labels = np.asarray(preds, dtype=float), np.asarray(labels, dtype=float)
    if np.std(preds) == 0 or np.std(labels) == 0:
        return 0.0
    return float(spearmanr(preds, labels)[0])


_ROUGE = None

# Scripts written without spaces between words (Chinese, Japanese kana, Thai): each character is a token, as the
# Chinese Rouge evaluations do, instead of a whole sentence being one token.
_UNSPACED = re.compile("[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


class _UnicodeTokenizer:
    """rouge-score's tokenizer keeps [a-z0-9] only, so text in Arabic, Hebrew, Cyrillic, Chinese or emoji scored
    Rouge-L 0 against itself. This one keeps every script's letters, digits and marks, and non-ASCII symbols (emoji)
    as tokens of their own; ASCII text is tokenized (and Porter-stemmed) exactly as rouge-score does."""

    def __init__(self):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        tokens, word = [], []
        for ch in text.lower():
            kind = unicodedata.category(ch)[0]
            if _UNSPACED.match(ch) or (kind == "S" and not ch.isascii()):
                tokens += ["".join(word), ch]
                word = []
            elif kind in "LNM" and (not ch.isascii() or ch.isalnum()):
                word.append(ch)
            else:
                tokens.append("".join(word))
                word = []
        tokens.append("".join(word))
        return [self._stem(t) for t in tokens if t]

    def _stem(self, token: str) -> str:
        return self._stemmer.stem(token) if len(token) > 3 and token.isascii() else token


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean Rouge-L F-measure (Google's rouge-score, with stemming, over the words of every script), in [0, 1]."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeTokenizer())
    if not references:
        return float("nan")
    scores = [_ROUGE.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return float(np.mean(scores))


_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def final_number(text: str) -> str | None:
    """The answer of a GSM8K-style solution: the first number after its first '####' (what a model writes after
    its answer, such as a next question of its own, is not the answer), else the last number in it."""
    if "####" in text:
        found = _NUMBER.findall(text.split("####", 1)[1])[:1]
    else:
        found = _NUMBER.findall(text)[-1:]
    if not found:
        return None
    value = found[0].replace(",", "").rstrip(".")
    try:
        number = float(value)
    except ValueError:
        return None
    return str(int(number)) if number.is_integer() else str(number)


def exact_match_number(predictions: list[str], references: list[str]) -> float:
    hits = [final_number(p) is not None and final_number(p) == final_number(r) for p, r in zip(predictions, references)]
    return float(np.mean(hits)) if hits else float("nan")


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp of the mean loss; NaN over no tokens (exp(0 / 1) read as a perfect 1.0)."""
    return math.exp(total_nll / total_tokens) if total_tokens else float("nan")
