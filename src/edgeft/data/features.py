"""Turn task examples into token features and padded batches for one backbone.

Four objectives cover every (task kind, backbone head) pair:
- classify / regress: a sequence-classification head (BERT [CLS] pooling, Llama last-token pooling)
- verbalize: a causal LM scores one label word per class at the end of a prompt (zero-shot capable)
- lm: next-token loss on the response (generation tasks) or on packed text blocks (LM tasks)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from edgeft.data.tasks import Task
from edgeft.errors import ConfigError, DataError

Objective = Literal["classify", "regress", "verbalize", "lm"]


def objective_for(task: Task, head: str) -> Objective:
    if task.kind in ("generation", "lm"):
        if head != "causal_lm":
            raise ConfigError(f"task '{task.name}' needs a causal LM; this backbone has a '{head}' head.")
        return "lm"
    if head == "causal_lm":
        if task.kind == "regression":
            raise ConfigError(f"task '{task.name}' is a regression: use --head classifier with a causal LM.")
        return "verbalize"
    return "regress" if task.kind == "regression" else "classify"


def format_prompt(example: dict, tokenizer, chat: bool) -> str:
    """The generation prompt: the model's chat template when it has one, else an Alpaca-style layout."""
    user = example["instruction"] + (f"\n\n{example['input']}" if example.get("input") else "")
    if chat:
        return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
    return f"### Instruction:\n{user}\n\n### Response:\n"


def cut_notes(cut: list[int], rows: list[int], max_length: int) -> list[str]:
    """A line when max_length shortened training or dev rows (train, dev counts): the model then never sees those
    rows' beginnings (prompts keep their end, answers their start), and a user should know to raise it."""
    parts = [f"{c} of {n} {name} rows" for c, n, name in zip(cut, rows, ("training", "dev")) if c]
    if not parts:
        return []
    return [f"--max-length {max_length} shortened {' and '.join(parts)} (a prompt keeps its end, an answer its "
            "start); raise --max-length to keep them whole"]


def long_answer_notes(featurizer, dev_feats: list[dict], max_new_tokens: int, option: str) -> list[str]:
    """A line when reference answers are longer than the tokens generated to score them: such an answer can only
    be matched in part (GSM8K's final number comes last), so the score understates the model."""
    long = sum(len(featurizer.tokenizer.encode(f["response"], add_special_tokens=False)) > max_new_tokens
               for f in dev_feats if "response" in f)
    if not long:
        return []
    return [f"{long} of {len(dev_feats)} dev answers are longer than the {max_new_tokens} tokens generated to score "
            f"them, so those generations stop before the answer's end; raise {option} to score them whole"]


def check_features(featurizer, feats: list[dict], split: str) -> None:
    """A DataError when a split gave no features: packed text shorter than one block of max_length gave none, and
    a run then trained no step, or scored a dev perplexity of 1.0 over no tokens, and reported success."""
    if feats:
        return
    use = "train on" if split == "training" else "score"
    more = "--train-samples" if split == "training" else "--dev-samples"
    raise DataError(f"task '{featurizer.task.name}': the {split} text is {featurizer.tokens} tokens, less than one "
                    f"block of --max-length {featurizer.max_length}, so there is no block to {use}; lower "
                    f"--max-length, or give more text ({more}, or a longer file).")


@dataclass
class Featurizer:
    task: Task
    tokenizer: object
    objective: Objective
    max_length: int
    chat: bool | None = None

    def __post_init__(self):
        if self.chat is None:
            self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.label_token_ids: list[int] = []
        self.cut = 0  # rows the last encode() shortened to max_length
        self.tokens = 0  # tokens of the text the last encode() packed into blocks (LM tasks)
        self._check_special_tokens()
        if self.objective == "verbalize":
            ids = [self.tokenizer.encode(w, add_special_tokens=False) for w in self.task.label_words]
            first = [i[0] for i in ids]
            if len(set(first)) != len(first):
                raise ConfigError(f"label words {self.task.label_words} share a first token, so the LM head cannot "
                                  "tell them apart; pass --label-words with one word per label, each starting "
                                  "differently (in the labels' sorted order), or --head classifier (a trained "
                                  "classification head).")
            self.label_token_ids = first

    def _check_special_tokens(self) -> None:
        """Batches are padded with the pad token (the backbone falls back to EOS), and each answer and document
        ends with EOS: a tokenizer without them failed deep in batching, with a TypeError about None."""
        tok, packed = self.tokenizer, self.objective == "lm" and self.task.kind == "lm"  # full blocks: no padding
        needs = {} if packed else {"pad_token": "to pad batches with"}
        if self.objective == "lm":
            needs["eos_token"] = "to end each answer or document with"
        missing = [f"{name} ({why})" for name, why in needs.items() if getattr(tok, f"{name}_id") is None]
        if missing:
            where = getattr(tok, "name_or_path", "") or "this model"
            raise ConfigError(f"{where}: the tokenizer has no {' and no '.join(missing)}; set "
                              f"{'it' if len(missing) == 1 else 'them'} in the model folder's tokenizer_config.json "
                              "to a token of its vocabulary (e.g. \"eos_token\": \"</s>\"; the pad token defaults "
                              "to the EOS token).")

    # -- encoding ---------------------------------------------------------------------------------
    def encode(self, examples: list[dict]) -> list[dict]:
        """Features of the examples; `cut` then counts those max_length shortened (the run says so)."""
        self.cut = 0
        if self.objective == "lm" and self.task.kind == "lm":
            return self._pack(examples)
        return [self._encode_one(ex) for ex in examples]

    def _pair_text(self, ex: dict) -> str:
        if self.task.prompt_template:
            return self.task.prompt_template.format(text=ex["text"], text2=ex.get("text2", ""))
        return ex["text"] + (f"\n{ex['text2']}" if "text2" in ex else "")

    def _encode_one(self, ex: dict) -> dict:
        tok = self.tokenizer
        if self.objective in ("classify", "regress") and "token_type_ids" in tok.model_input_names:
            enc = tok(ex["text"], ex.get("text2"), truncation=True, max_length=self.max_length)
            if len(enc["input_ids"]) == self.max_length:  # full: was anything left out?
                self.cut += len(tok(ex["text"], ex.get("text2"))["input_ids"]) > self.max_length
            return {"id": ex["id"], "input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                    "label": ex["label"]}
        if self.objective in ("classify", "regress", "verbalize"):
            ids = tok.encode(self._pair_text(ex), add_special_tokens=True)
            self.cut += len(ids) > self.max_length
            ids = ids[-self.max_length:]  # keep the question at the end
            return {"id": ex["id"], "input_ids": ids, "label": ex["label"]}
        prompt = tok.encode(format_prompt(ex, tok, self.chat), add_special_tokens=not self.chat)
        response = tok.encode(ex["response"], add_special_tokens=False) + [tok.eos_token_id]
        # Training rows make room for the response; the prompt the model answers at evaluation is cut by
        # max_length alone, so a score never depends on the length of the reference answer.
        keep_prompt = max(self.max_length - len(response), self.max_length // 2)
        train_prompt = prompt[-keep_prompt:]
        ids = (train_prompt + response)[: self.max_length]
        self.cut += len(train_prompt) < len(prompt) or len(train_prompt) + len(response) > self.max_length
        labels = ([-100] * len(train_prompt) + response)[: self.max_length]
        return {"id": ex["id"], "input_ids": ids, "labels": labels, "prompt_ids": prompt[-self.max_length:],
                "response": ex["response"]}

    def _pack(self, docs: list[dict]) -> list[dict]:
        """Concatenate documents (EOS between) and cut into full blocks of max_length tokens. A block's id starts
        with its first document's: named by the task alone, training and dev blocks shared ids, and PAC's cache,
        which keys activations by id, stopped the first evaluation with a 'cached for other tokens' error."""
        stream: list[int] = []
        for d in docs:
            stream += self.tokenizer.encode(d["text"], add_special_tokens=False) + [self.tokenizer.eos_token_id]
        n, self.tokens = len(stream) // self.max_length, len(stream)
        prefix = f"{self.task.name}-{docs[0]['id']}" if docs else self.task.name
        return [{"id": f"{prefix}-block-{i}", "input_ids": stream[i * self.max_length:(i + 1) * self.max_length],
                 "labels": stream[i * self.max_length:(i + 1) * self.max_length]} for i in range(n)]

    # -- batching ---------------------------------------------------------------------------------
    @property
    def padding_side(self) -> str:
        # Verbalizer batches pad on the left so the last position is every row's last real token.
        return "left" if self.objective == "verbalize" else "right"

    def collate(self, feats: list[dict]) -> dict:
        pad = self.tokenizer.pad_token_id
        width = max(len(f["input_ids"]) for f in feats)
        left = self.padding_side == "left"

        def padded(key, value):
            rows = []
            for f in feats:
                seq = f[key]
                fill = [value] * (width - len(seq))
                rows.append(fill + seq if left else seq + fill)
            return torch.tensor(rows, dtype=torch.long)

        batch = {"input_ids": padded("input_ids", pad), "ids": [f["id"] for f in feats]}
        batch["attention_mask"] = torch.tensor(
            [([0] * (width - len(f["input_ids"])) + [1] * len(f["input_ids"])) if left else
             ([1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))) for f in feats], dtype=torch.long)
        if "token_type_ids" in feats[0]:
            batch["token_type_ids"] = padded("token_type_ids", 0)
        if "labels" in feats[0]:
            batch["labels"] = padded("labels", -100)
        if "label" in feats[0]:
            dtype = torch.float32 if self.objective == "regress" else torch.long
            batch["label"] = torch.tensor([f["label"] for f in feats], dtype=dtype)
        return batch
