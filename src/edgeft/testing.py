"""Tiny random-weight backbones for unit tests (never for results): real transformers classes and a
real (word-level) tokenizer, saved as ordinary model folders so every loader path is exercised."""

from __future__ import annotations

import re
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]
WORDS = (
    "the a an of to and is was it this that film movie story good bad great awful fine boring fun "
    "negative positive yes no review sentiment sentence premise hypothesis label text second "
    "instruction response input what who why how answer question : ( ) ? . , ! # 0 1 2 3 4 5 6 7 8 9"
).split()


def _vocab(extra_text: str = "") -> dict[str, int]:
    words = list(dict.fromkeys(WORDS + re.findall(r"\w+|[^\w\s]", extra_text.lower())))
    return {w: i for i, w in enumerate(SPECIALS + words)}


def tiny_tokenizer(family: str, extra_text: str = ""):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = _vocab(extra_text)
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


def make_tiny_model(out: Path, family: str = "llama", layers: int = 4, hidden: int = 32, seed: int = 0,
                    extra_text: str = "") -> Path:
    """Write a tiny random model folder (config, safetensors, tokenizer) and return its path."""
    import torch
    from transformers import AutoModelForCausalLM, BertConfig, BertModel, LlamaConfig

    torch.manual_seed(seed)
    tok = tiny_tokenizer(family, extra_text)
    if family == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=512, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
        model = AutoModelForCausalLM.from_config(cfg)
    elif family == "bert":
        cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=4, max_position_embeddings=512, pad_token_id=tok.pad_token_id)
        model = BertModel(cfg)
    else:
        raise ValueError(family)
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
