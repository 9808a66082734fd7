"""Tiny random-weight Llama/BERT model folders with a word-level tokenizer built here (no download)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def _vocab(task: str, size: int) -> list[str]:
    from edgeft.data import TaskConfig, load_task

    t = load_task(TaskConfig(name=task, train_samples=400, dev_samples=50, seed=0))
    words = Counter()
    for ex in t.train + t.dev:
        for key in ("text", "text2"):
            if key in ex:
                words.update(re.findall(r"\w+|[^\w\s]", ex[key].lower()))
    extra = [w.strip().lower() for w in t.label_words] + ["question", "answer", "sentence", "sentiment", ":", "?"]
    keep = list(dict.fromkeys(extra + [w for w, _ in words.most_common(size)]))
    return keep[:size]


def tokenizer(task: str = "sst2", size: int = 600):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + _vocab(task, size))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")


def make_llama(out: Path, task: str = "sst2", layers: int = 4, hidden: int = 32, seed: int = 0, heads: int = 4,
               kv_heads: int = 2, intermediate: int | None = None) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer(task)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate or hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=True, attention_dropout=0.0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_bert(out: Path, task: str = "sst2", layers: int = 3, hidden: int = 32, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    tok = tokenizer(task)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                     num_attention_heads=4, max_position_embeddings=256, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = BertModel(cfg)
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
