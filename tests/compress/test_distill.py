"""GKD: the generalized JSD loss, and a few steps moving a pruned student towards its teacher."""

import copy

import pytest
import torch
import torch.nn.functional as F

from edgeft.compress.distill import (DistillOptions, check_compatible, distill_pairs, generalized_jsd, gkd,
                                     supervised_batch)
from edgeft.compress.prune import StructuredPlan, apply_structured
from edgeft.errors import ConfigError, ModelError
from edgeft.models import load_backbone


def kl(p_logits, q_logits):
    """KL(P || Q) per position, summed over the vocabulary."""
    p = F.log_softmax(p_logits, -1)
    q = F.log_softmax(q_logits, -1)
    return (p.exp() * (p - q)).sum(-1)


def test_generalized_jsd_limits_and_symmetry():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    assert torch.allclose(generalized_jsd(s, t, beta=0.0), kl(t, s).mean(), atol=1e-5)  # forward KL(T || S)
    assert torch.allclose(generalized_jsd(s, t, beta=1.0), kl(s, t).mean(), atol=1e-5)  # reverse KL(S || T)
    assert torch.allclose(generalized_jsd(s, t, beta=0.5), generalized_jsd(t, s, beta=0.5), atol=1e-6)
    m = torch.log(0.5 * F.softmax(s, -1) + 0.5 * F.softmax(t, -1))
    jsd = 0.5 * (F.softmax(t, -1) * (F.log_softmax(t, -1) - m)).sum(-1) + \
        0.5 * (F.softmax(s, -1) * (F.log_softmax(s, -1) - m)).sum(-1)
    assert torch.allclose(generalized_jsd(s, t, beta=0.5), jsd.mean(), atol=1e-5)
    assert float(generalized_jsd(s, s, beta=0.3)) == pytest.approx(0.0, abs=1e-6)
    labels = torch.full((2, 5), -100)
    labels[0, 2] = 1
    assert torch.allclose(generalized_jsd(s, t, labels, 0.0), kl(t, s)[0, 2], atol=1e-5)


def held_out_divergence(student, teacher, pairs, pad):
    batch = supervised_batch(pairs, pad)
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(generalized_jsd(s[:, :-1], t[:, :-1], batch["labels"][:, 1:], 0.5))


def test_gkd_moves_a_pruned_student_towards_its_teacher(tiny_word_llama):
    teacher = load_backbone(str(tiny_word_llama))
    student = copy.deepcopy(teacher.model)
    apply_structured(student, StructuredPlan({0: [0], 1: [1]}, {i: list(range(0, 128, 2)) for i in range(3)}))
    tok = teacher.tokenizer
    pairs = distill_pairs("wikitext2", tok, 24, prompt_len=12, completion_len=12)
    train, held = pairs[:16], pairs[16:]
    before = held_out_divergence(student, teacher.model, held, tok.pad_token_id)
    res = gkd(student, teacher.model, tok, train, DistillOptions(teacher=str(tiny_word_llama), steps=12, batch_size=4,
                                                                 lr=3e-3, lmbda=0.5, max_new_tokens=12, seed=0))
    after = held_out_divergence(student, teacher.model, held, tok.pad_token_id)
    assert after < 0.8 * before
    assert any(res.on_policy) and not all(res.on_policy)  # lmbda = 0.5 mixes both kinds of batch
    assert all(not p.requires_grad for p in student.parameters())


def test_student_and_teacher_must_share_a_vocabulary(tiny_word_llama, tiny_smol, smol_tokenizer):
    a, b = load_backbone(str(tiny_word_llama)), load_backbone(str(tiny_smol))
    with pytest.raises(ModelError, match="do not share a tokenizer"):
        check_compatible(a.model, b.model, a.tokenizer, b.tokenizer)


def test_distillation_needs_a_text_task(tiny_word_llama):
    tok = load_backbone(str(tiny_word_llama)).tokenizer
    with pytest.raises(ConfigError, match="classification task"):
        distill_pairs("sst2", tok, 4, 8, 8)
