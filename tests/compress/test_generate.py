"""`edgeft generate` / `edgeft chat`: the streamed text is the model's own greedy answer, for a base model, a
base + LoRA adapter, a compressed folder, a model with a chat template, and a GGUF export in llama.cpp."""

import json
import shutil

import pytest
import torch

from edgeft.errors import ConfigError, ModelError
from edgeft.generate import alpaca_chat

from .helpers import cli, make_adapter
from .test_gguf import _llama_cpp, compress

TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
            "{% if add_generation_prompt %}assistant :{% endif %}")


def greedy(model, tok, text, n, special=True):
    ids = tok(text, return_tensors="pt", add_special_tokens=special)["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert answer, "the tiny model answered nothing; pick another prompt"
    return answer


def test_generate_streams_the_answer_of_a_base_model_an_adapter_and_a_compressed_folder(tiny_word_llama, tmp_path):
    from peft import PeftModel

    from edgeft.compress.store import load_compressed
    from edgeft.models import load_backbone

    prompt = "what is the history of the city"
    text = alpaca_chat([{"role": "user", "content": prompt}])  # no chat template: edgeft's training layout
    bb = load_backbone(str(tiny_word_llama))
    assert cli("generate", "--model", str(tiny_word_llama), "--prompt", prompt, "--max-new-tokens", "12").strip() \
        == greedy(bb.model, bb.tokenizer, text, 12)

    adapter = make_adapter(tiny_word_llama, tmp_path / "lora")
    tuned = PeftModel.from_pretrained(load_backbone(str(tiny_word_llama)).model, str(adapter)).eval()
    answer = greedy(tuned, bb.tokenizer, text, 12)
    assert answer != greedy(bb.model, bb.tokenizer, text, 12)  # the adapter changes the answer
    assert cli("generate", "--model", str(tiny_word_llama), "--adapter", str(adapter), "--prompt", prompt,
               "--max-new-tokens", "12").strip() == answer

    prompt_adapter = make_adapter(tiny_word_llama, tmp_path / "prompt", "prompt")
    tuned = PeftModel.from_pretrained(load_backbone(str(tiny_word_llama)).model, str(prompt_adapter)).eval()
    assert cli("generate", "--model", str(tiny_word_llama), "--adapter", str(prompt_adapter), "--prompt", prompt,
               "--max-new-tokens", "12").strip() == greedy(tuned, bb.tokenizer, text, 12)

    folder = compress(tiny_word_llama, tmp_path / "q", "gptq", bits=4, group_size=32)
    qmodel, qtok, _ = load_compressed(folder)
    assert cli("generate", "--model", str(folder), "--prompt", prompt, "--raw", "--max-new-tokens", "12").strip() \
        == greedy(qmodel, qtok, prompt, 12)


@pytest.fixture
def templated(tiny_word_llama, tmp_path):
    """The tiny model with a chat template in its tokenizer config, as instruct models ship."""
    from transformers import AutoTokenizer

    folder = tmp_path / "chat-model"
    shutil.copytree(tiny_word_llama, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(folder)
    return folder


def test_chat_keeps_the_conversation_in_the_template_and_quits_on_exit_or_eof(templated):
    from edgeft.models import load_backbone

    bb = load_backbone(str(templated))
    tok = bb.tokenizer
    first = [{"role": "user", "content": "what is the film"}]
    a1 = greedy(bb.model, tok, tok.apply_chat_template(first, add_generation_prompt=True, tokenize=False), 6, False)
    second = first + [{"role": "assistant", "content": a1}, {"role": "user", "content": "why"}]
    a2 = greedy(bb.model, tok, tok.apply_chat_template(second, add_generation_prompt=True, tokenize=False), 6, False)
    fresh = greedy(bb.model, tok, tok.apply_chat_template([{"role": "user", "content": "why"}],
                                                          add_generation_prompt=True, tokenize=False), 6, False)
    common = ["chat", "--model", str(templated), "--max-new-tokens", "6", "--temperature", "0"]
    out = cli(*common, input="what is the film\nwhy\n/reset\nwhy\n/exit\nwhat is the film\n")
    answers = [line.split("model> ", 1)[1].strip() for line in out.splitlines() if "model> " in line]
    assert answers == [a1, a2, fresh]  # the second turn saw the first; /reset forgot; nothing after /exit
    out = cli(*common, input="what is the film\n")  # end of input quits cleanly too
    assert [line.split("model> ", 1)[1].strip() for line in out.splitlines() if "model> " in line] == [a1]


def test_generate_refuses_unclear_sources(tiny_word_llama, tiny_bert, tmp_path):
    with pytest.raises(ConfigError, match="exactly one of --model"):
        cli("generate", "--prompt", "hi")
    with pytest.raises(ConfigError, match="exactly one of --model"):
        cli("generate", "--prompt", "hi", "--model", str(tiny_word_llama), "--gguf", str(tmp_path / "m.gguf"))
    with pytest.raises(ModelError, match="cannot generate"):
        cli("generate", "--prompt", "hi", "--model", str(tiny_bert))


def test_generate_and_chat_run_a_gguf_export_in_llama_cpp(tiny_smol, tmp_path):
    llamacpp = _llama_cpp()
    from edgeft.compress.export import export_model

    export_model(str(tiny_smol), tmp_path / "m.gguf", "gguf", "f32")
    llm = llamacpp.load(tmp_path / "m.gguf", n_ctx=128, logits_all=False)
    prompt = "The history of the city"
    expected = llm.create_completion(prompt, max_tokens=8, temperature=0.0)["choices"][0]["text"]
    assert expected.strip()
    out = cli("generate", "--gguf", str(tmp_path / "m.gguf"), "--prompt", prompt, "--raw", "--max-new-tokens", "8")
    assert out.strip() == expected.strip()
    chat = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=8, temperature=0.0)
    expected = chat["choices"][0]["message"]["content"]
    out = cli("chat", "--gguf", str(tmp_path / "m.gguf"), "--max-new-tokens", "8", "--temperature", "0",
              input=prompt + "\n/exit\n")
    assert [line.split("model> ", 1)[1].strip() for line in out.splitlines() if "model> " in line] == [expected.strip()]


def test_generate_runs_a_zeroth_order_run_over_prompt_tuning(tiny_word_llama, tmp_path):
    """MeZO (or FedKSeed) with base=prompt saves a prompt-tuning adapter under its own name: generate refused it
    as 'a mezo adapter runs beside the backbone', and compress gave the same wrong reason."""
    from peft import PeftModel

    from edgeft.compress.merge import merge_adapter
    from edgeft.models import load_backbone

    prompt = "what is the history of the city"
    text = alpaca_chat([{"role": "user", "content": prompt}])
    adapter = make_adapter(tiny_word_llama, tmp_path / "mezo", "mezo",
                           options={"base": "prompt", "base_options": {"init": "random"}})
    tuned = PeftModel.from_pretrained(load_backbone(str(tiny_word_llama)).model, str(adapter)).eval()
    bb = load_backbone(str(tiny_word_llama))
    assert cli("generate", "--model", str(tiny_word_llama), "--adapter", str(adapter), "--prompt", prompt,
               "--max-new-tokens", "12").strip() == greedy(tuned, bb.tokenizer, text, 12)
    assert "virtual-token" in merge_adapter(load_backbone(str(tiny_word_llama)), adapter).reason


def test_a_gguf_runs_at_its_models_own_context_or_the_one_asked_for(tiny_smol, tmp_path):
    """llama.cpp ran every GGUF at 2048 tokens, past a shorter model's positions, and a long prompt had no remedy
    but shortening it."""
    _llama_cpp()
    from edgeft.compress.export import export_model
    from edgeft.generate import GGUFTalker, Sampling, open_talker, trained_context

    gguf = tmp_path / "m.gguf"
    export_model(str(tiny_smol), gguf, "gguf", "f32")
    trained = json.loads((tiny_smol / "config.json").read_text())["max_position_embeddings"]
    assert trained < 2048 and trained_context(gguf) == trained
    assert GGUFTalker(gguf).n_ctx == trained  # the model's own, being shorter than the default (2048)
    with pytest.raises(ConfigError, match=rf"--context {trained + 1}: .*trained for {trained} tokens.*at most"):
        GGUFTalker(gguf, n_ctx=trained + 1)
    with pytest.raises(ConfigError, match="--context 0: "):
        GGUFTalker(gguf, n_ctx=0)
    with pytest.raises(ConfigError, match="goes with --gguf"):
        open_talker(str(tiny_smol), n_ctx=64)
    short = GGUFTalker(gguf, n_ctx=32)  # before: an 82-token prompt failed with numpy's "could not broadcast"
    assert short.n_ctx == 256 and "".join(short.complete("the city " * 40, Sampling(max_new_tokens=4)))
    with pytest.raises(ConfigError, match=rf"context of 256 tokens: raise --context \(this model holds up to {trained}\)"):
        "".join(short.complete("the city " * 200, Sampling(max_new_tokens=4)))
    out = cli("generate", "--gguf", str(gguf), "--context", "64", "--prompt", "The city", "--raw",
              "--max-new-tokens", "4")
    assert out.strip()
