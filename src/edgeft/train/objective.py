"""Loss and predictions of a batch for each objective, over any model with the HF call convention.

Methods (PEFT-wrapped models, the PAC side network, ...) only need to accept
`model(input_ids=, attention_mask=, [token_type_ids=], [logits_to_keep=], [sample_ids=])` and return
an object with `.logits`; everything task-specific lives here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeft.models.blocks import token_ids_on

MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict) -> dict:
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch}
    if "ids" in batch:
        inputs["sample_ids"] = batch["ids"]
    return inputs


def call_model(model, batch: dict, **extra):
    inputs = model_inputs(batch)
    if not getattr(model, "accepts_sample_ids", False):
        inputs.pop("sample_ids", None)
    return model(**inputs, **extra)


def forward(model, batch: dict, objective: str, label_token_ids: list[int] | None = None):
    """(mean loss, logits used for predictions, token count) for one batch."""
    if objective == "verbalize":
        if getattr(model, "accepts_vocab_ids", False):  # the label words' logits only, not the whole vocabulary
            logits = call_model(model, batch, logits_to_keep=1, vocab_ids=label_token_ids).logits[:, -1, :]
        else:
            logits = call_model(model, batch, logits_to_keep=1).logits[:, -1, :]
            logits = logits.index_select(-1, token_ids_on(label_token_ids, logits.device))  # no per-step sync
        return F.cross_entropy(logits, batch["label"]), logits, len(batch["label"])
    if objective in ("classify", "regress"):
        logits = call_model(model, batch).logits
        if objective == "regress":
            logits = logits.squeeze(-1)
            return F.mse_loss(logits, batch["label"]), logits, len(batch["label"])
        return F.cross_entropy(logits, batch["label"]), logits, len(batch["label"])
    logits = call_model(model, batch).logits
    # prompt tuning prepends virtual tokens: their positions come first and predict no label
    logits = logits[:, logits.shape[1] - batch["labels"].shape[1]:, :]
    shift_labels = batch["labels"][:, 1:]
    # only the labelled positions: prompt and padding rows of the vocabulary-wide softmax cost as much as the
    # answer's, in every backward and in every direction of a forward gradient
    rows, cols = (shift_labels != -100).nonzero(as_tuple=True)
    picked = logits[:, :-1, :][rows, cols].float()
    loss = F.cross_entropy(picked, shift_labels[rows, cols], reduction="sum") / max(len(rows), 1)
    return loss, logits, len(rows)


def predictions(logits: torch.Tensor, objective: str) -> list:
    if objective == "regress":
        return logits.detach().float().tolist()
    return logits.detach().argmax(-1).tolist()
