"""BlockView: a transformer seen as embed -> ordered blocks -> final (norm + head).

Every planner, method and runtime speaks in blocks ("device 2 runs blocks 10..19"), so this is the
one place that knows how a Llama-family or BERT-family model is laid out inside transformers. The
attention mask and rotary embeddings are rebuilt here so a slice of blocks can run anywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeft.errors import ModelError


_ID_TENSORS: dict[tuple, torch.Tensor] = {}


def token_ids_on(ids: list[int], device: torch.device) -> torch.Tensor:
    """`ids` as a long tensor on `device`, made once per (ids, device). Indexing a CUDA tensor with a Python list
    copies the list from pageable host memory at every call, and that copy makes the host wait for the GPU to
    drain its queue: in PAC's cached step it was one stall a step (h17's profile, docs/benchmarks_pac.md)."""
    key = (tuple(ids), str(device))
    if key not in _ID_TENSORS:
        _ID_TENSORS[key] = torch.tensor(ids, dtype=torch.long, device=device)
    return _ID_TENSORS[key]


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


class BlockView:
    def __init__(self, model: nn.Module, family: str):
        self.model = model
        self.family = family
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.base = base
        if family == "llama":
            self.core = base.model  # LlamaModel
            self.blocks: nn.ModuleList = self.core.layers
            self.head = getattr(base, "lm_head", None) or getattr(base, "score", None)
            self.is_causal = True
        elif family == "bert":
            self.core = base.bert if hasattr(base, "bert") else base
            self.blocks = self.core.encoder.layer
            self.head = getattr(base, "classifier", None)
            self.is_causal = False
        else:
            raise ModelError(f"no BlockView for model family '{family}' (supported: llama, bert)")
        self.is_classifier = hasattr(base, "score") or hasattr(base, "classifier")

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def embedding(self) -> nn.Module:
        """The token embedding module (Llama's embed_tokens; BERT's embeddings, positions included)."""
        return self.core.embed_tokens if self.family == "llama" else self.core.embeddings

    # -- the three parts ------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.family == "llama":
            return self.core.embed_tokens(input_ids)
        return self.core.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def attention_bias(self, attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive (B, 1, T, T) mask: padding keys masked, and future keys too for causal models."""
        b, t = attention_mask.shape
        keep = attention_mask[:, None, None, :].bool().expand(b, 1, t, t)
        if self.is_causal:
            causal = torch.ones(t, t, dtype=torch.bool, device=attention_mask.device).tril()
            keep = keep & causal
        bias = torch.zeros(b, 1, t, t, dtype=dtype, device=attention_mask.device)
        return bias.masked_fill(~keep, torch.finfo(dtype).min)

    def block_inputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict:
        """What every block needs besides the hidden states: the additive mask (and rotary tables for Llama).

        Built once per batch; `run_block` takes it, so a caller running one block at a time over many
        batches (PAC's streamed backbone pass) does not rebuild it per block.
        """
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        kwargs = {"attention_mask": self.attention_bias(attention_mask, hidden.dtype)}
        if self.family == "llama":
            pos = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
            kwargs.update(position_ids=pos, position_embeddings=self.core.rotary_emb(hidden, pos))
        return kwargs

    def run_block(self, index: int, hidden: torch.Tensor, inputs: dict) -> torch.Tensor:
        out = self.blocks[index](hidden, **inputs)
        return out[0] if isinstance(out, tuple) else out

    def run_blocks(self, hidden: torch.Tensor, start: int, end: int,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run blocks[start:end] on hidden states (B, T, H)."""
        if not 0 <= start <= end <= self.num_blocks:
            raise ValueError(f"block range {start}..{end} outside 0..{self.num_blocks}")
        inputs = self.block_inputs(hidden, attention_mask)
        for i in range(start, end):
            hidden = self.run_block(i, hidden, inputs)
        return hidden

    def final(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
              vocab_ids: list[int] | None = None) -> torch.Tensor:
        """Final norm + head. Classifiers pool (first token for BERT, last real token for Llama).

        `vocab_ids`: an LM head's logits for these tokens only (a verbalizer reads two of SmolLM2's 49,152:
        the whole product and its backward were a third of PAC's cached step on a CPU)."""
        if self.family == "llama":
            hidden = self.core.norm(hidden)
            if self.is_classifier:
                last = (attention_mask.sum(1) - 1) if attention_mask is not None else \
                    torch.full((hidden.shape[0],), hidden.shape[1] - 1, device=hidden.device)
                return self.head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
            if vocab_ids is None:
                return self.head(hidden)
            ids = token_ids_on(vocab_ids, hidden.device)
            if isinstance(self.head, torch.nn.Linear):
                bias = self.head.bias.index_select(0, ids) if self.head.bias is not None else None
                return torch.nn.functional.linear(hidden, self.head.weight.index_select(0, ids), bias)
            return self.head(hidden).index_select(-1, ids)
        if self.is_classifier:
            pooled = self.core.pooler(hidden) if self.core.pooler is not None else hidden[:, 0]
            return self.head(self.base.dropout(pooled))
        return hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.embed(input_ids, attention_mask, token_type_ids)
        hidden = self.run_blocks(hidden, 0, self.num_blocks, attention_mask)
        return self.final(hidden, attention_mask)

    # -- sizes --------------------------------------------------------------------------------------
    def block_param_counts(self) -> list[int]:
        return [_count(b) for b in self.blocks]

    def embed_param_count(self) -> int:
        return _count(self.embedding)

    def final_param_count(self) -> int:
        n = _count(self.head) if self.head is not None else 0
        if self.family == "llama":
            n += _count(self.core.norm)
            if self.head is getattr(self.base, "lm_head", None) and self.base.config.tie_word_embeddings:
                n = _count(self.core.norm)  # tied to the embedding; counted there
        elif getattr(self.core, "pooler", None) is not None and self.is_classifier:
            n += _count(self.core.pooler)
        return n
