"""Tiny random-weight model folders for the tests (never for results).

Real transformers classes saved as ordinary model folders, so every loader path is exercised, with
word-level tokenizers built here (no download). Two vocabularies:
- `word_tokenizer`: a fixed list of English words plus any words of `extra_text`;
- `task_tokenizer`: the most frequent words of a bundled task, so task text is rarely <unk>.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

WORD_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]
TASK_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
WORDS = (
    "the a an of to and is was it this that film movie story good bad great awful fine boring fun "
    "negative positive yes no review sentiment sentence premise hypothesis label text second "
    "instruction response input what who why how answer question : ( ) ? . , ! # 0 1 2 3 4 5 6 7 8 9"
).split()


# The compression tests' Llama: 3 wider blocks whose weights are large enough that quantisation and
# pruning errors are visible.
COMPRESS_LLAMA = dict(layers=3, hidden=64, intermediate=128, weight_scale=5.0)


def word_tokenizer(family: str = "llama", extra_text: str = ""):
    """Fixed English words (+ those of `extra_text`); BERT-style [CLS]/[SEP] templates for family 'bert'."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(WORDS + re.findall(r"\w+|[^\w\s]", extra_text.lower())))
    vocab = {w: i for i, w in enumerate(WORD_SPECIALS + words)}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    if family == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]",
                                       model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>",
                                   eos_token="</s>", model_input_names=["input_ids", "attention_mask"])


def task_tokenizer(task: str = "sst2", size: int = 600):
    """The `size` most frequent words of a bundled task's first rows (plus its label words)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from edgeft.data import TaskConfig, load_task

    t = load_task(TaskConfig(name=task, train_samples=400, dev_samples=50, seed=0))
    counts = Counter()
    for ex in t.train + t.dev:
        for key in ("text", "text2"):
            if key in ex:
                counts.update(re.findall(r"\w+|[^\w\s]", ex[key].lower()))
    extra = [w.strip().lower() for w in t.label_words] + ["question", "answer", "sentence", "sentiment", ":", "?"]
    words = list(dict.fromkeys(extra + [w for w, _ in counts.most_common(size)]))[:size]
    vocab = {w: i for i, w in enumerate(TASK_SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")


def _save(model, tok, out) -> Path:
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_llama(out, tok=None, layers: int = 4, hidden: int = 32, heads: int = 4, kv_heads: int = 2,
               intermediate: int | None = None, seed: int = 0, max_positions: int = 512, vocab: int | None = None,
               weight_scale: float = 1.0) -> Path:
    """A random LlamaForCausalLM folder. weight_scale > 1 enlarges the non-embedding matrices (the init's 0.02
    std hides quantisation and pruning errors)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tok or word_tokenizer("llama")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab or len(tok), hidden_size=hidden, intermediate_size=intermediate or hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      head_dim=hidden // heads, max_position_embeddings=max_positions, rope_theta=10000.0,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=True, attention_dropout=0.0)
    model = LlamaForCausalLM(cfg)
    if weight_scale != 1.0:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2 and "embed" not in name:
                    p.mul_(weight_scale)
    return _save(model, tok, out)


def make_bert(out, tok=None, layers: int = 4, hidden: int = 32, seed: int = 0, max_positions: int = 512,
              dropout: float = 0.1) -> Path:
    """A random BertModel folder (an encoder backbone: edgeft adds the task head)."""
    import torch
    from transformers import BertConfig, BertModel

    tok = tok or word_tokenizer("bert")
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                     num_attention_heads=4, max_position_embeddings=max_positions, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout, pad_token_id=tok.pad_token_id)
    return _save(BertModel(cfg), tok, out)


def make_tiny_model(out, family: str = "llama", layers: int = 4, hidden: int = 32, seed: int = 0,
                    extra_text: str = "") -> Path:
    """The default tiny model of a family with the fixed word vocabulary."""
    tok = word_tokenizer(family, extra_text)
    if family == "llama":
        return make_llama(out, tok, layers=layers, hidden=hidden, seed=seed)
    if family == "bert":
        return make_bert(out, tok, layers=layers, hidden=hidden, seed=seed)
    raise ValueError(f"tiny model family {family!r}: use llama or bert")
