"""Unusual and malformed inputs to `edgeft federate`, `edgeft generate` and `edgeft chat`: clear errors, said early,
naming the field and what to do (found by a review acting as a new user)."""

import subprocess
import sys

import pytest

from edgeft.errors import ConfigError
from edgeft.federated.config import config_from_dict
from edgeft.federated.partition import partition

EDGEFT = [sys.executable, "-m", "edgeft.cli"]


def run_cli(*args, stdin=None):
    return subprocess.run([*EDGEFT, *args], capture_output=True, text=True, timeout=120, input=stdin)


# -- federate: config keys ------------------------------------------------------------------------


@pytest.mark.parametrize("key, says, not_says", [
    ("epochs", "rounds (--rounds)", "'eps'"),       # was: "did you mean 'eps'?" (MeZO's perturbation scale)
    ("steps", "local_steps", "'eps'"),
    ("num_clients", "the key is clients", "min_clients"),  # was: "did you mean 'min_clients'?"
    ("r", "method_options", "'lr'"),                      # was: "did you mean 'lr'?"
    ("seeds", "num_seeds", "did you mean 'seed'"),
    ("text_column", "task_options", "check its spelling"),
])
def test_a_key_from_elsewhere_gets_an_honest_hint(key, says, not_says):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"algorithm": "fedkseed", key: 2}, "fed.yaml")
    text = str(err.value)
    assert text.startswith(f"fed.yaml: {key}: unknown key") and says in text and not_says not in text, text


def test_a_plain_typo_still_gets_the_nearest_key():
    with pytest.raises(ConfigError, match="rounds_: unknown key, did you mean 'rounds'"):
        config_from_dict({"algorithm": "fedit", "rounds_": 3})


def test_own_data_keys_on_a_bundled_task_are_refused_when_the_config_is_read():
    """Before: accepted here, refused only when the data loaded (after the progress bar started)."""
    with pytest.raises(ConfigError) as err:
        config_from_dict({"algorithm": "fedit", "task": "sst2", "task_options": {"text_column": "body"}}, "fed.yaml")
    text = str(err.value)
    assert text.startswith("fed.yaml: task_options: text_column (--text-column)") and "--data-file" in text, text
    assert "task.data_file" not in text  # a finetune config's key, not this config's
    with pytest.raises(ConfigError, match="task: unknown task 'nope'"):
        config_from_dict({"algorithm": "fedit", "task": "nope"})
    # your own file with its columns, a bundled task by its alias, and a bundled task alone stay fine
    config_from_dict({"algorithm": "fedit", "task": "mail.jsonl", "task_options": {"text_column": "body"}})
    config_from_dict({"algorithm": "fedit", "task": "SST-2"})


def test_cli_own_data_option_on_a_bundled_task_fails_before_any_work(tmp_path):
    proc = run_cli("federate", "--algorithm", "fedit", "--task", "sst2", "--text-column", "body", "--rounds", "1",
                   "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "task_options: text_column (--text-column)" in proc.stderr, proc.stderr[-2000:]
    assert "rounds" not in proc.stdout and not (tmp_path / "r").exists()


def test_task_and_data_file_together_are_refused_not_one_dropped(tmp_path):
    """Before: --task sst2 --data-file F ran on F without a word about --task."""
    data = tmp_path / "mail.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n')
    proc = run_cli("federate", "--algorithm", "fedit", "--task", "sst2", "--data-file", str(data),
                   "--out", str(tmp_path / "r"), "app", str(tmp_path / "app"))
    assert proc.returncode == 2 and "--task sst2 and --data-file" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "app").exists()


def test_more_clients_than_rows_says_what_to_do():
    with pytest.raises(ConfigError, match="set --clients 4 or fewer, or raise --train-samples"):
        partition([{"id": i, "label": i % 2} for i in range(4)], 10, "iid")


# -- generate / chat ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def talker(tiny_llama):
    from edgeft.generate import HFTalker
    from edgeft.models.backbone import load_backbone

    backbone = load_backbone(str(tiny_llama), head="causal_lm")
    return HFTalker(backbone.model, backbone.tokenizer)


def test_raw_completion_refuses_an_empty_or_overlong_prompt(talker):
    """Before: an empty prompt crashed in the embedding (a float tensor of no ids), and an over-long one generated
    past the model's positions without a word (the chat refused it)."""
    from edgeft.generate import Sampling

    from edgeft.generate import HFTalker

    class NoBos:  # SmolLM2's tokenizer adds no BOS: "" has no ids
        def __init__(self, tok):
            self.tok = tok

        def __call__(self, text, **kw):
            return {"input_ids": [i for i in self.tok(text, **kw)["input_ids"] if i != self.tok.bos_token_id]}

        def __getattr__(self, name):
            return getattr(self.tok, name)

    with pytest.raises(ConfigError, match="prompt is empty"):
        HFTalker(talker.model, NoBos(talker.tokenizer)).complete("", Sampling(max_new_tokens=2))
    with pytest.raises(ConfigError, match="exceeds the model's context of 512"):
        talker.complete("the " * 600, Sampling(max_new_tokens=2))
    assert "".join(talker.complete("the", Sampling(max_new_tokens=2))) is not None


def test_generate_refuses_an_empty_prompt_before_the_model_loads():
    proc = run_cli("generate", "--model", "no-such-model-here", "--raw", "--prompt", "  ")
    assert proc.returncode == 2 and "--prompt is empty" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


class FakeLlama:
    """llama_cpp.Llama's streaming API with its context check: a prompt of more than `n_ctx` words raises
    ValueError on the first next(), as llama.cpp does."""

    def __init__(self, n_ctx=10):
        self.n_ctx, self.seen = n_ctx, []

    def _stream(self, n_words, piece):
        if n_words > self.n_ctx:
            raise ValueError(f"Requested tokens ({n_words}) exceed context window of {self.n_ctx}")
        yield piece

    def create_chat_completion(self, messages, **kw):
        self.seen.append([m["content"] for m in messages])
        return self._stream(sum(len(m["content"].split()) for m in messages),
                            {"choices": [{"delta": {"content": "ok"}}]})

    def create_completion(self, prompt, **kw):
        return self._stream(len(prompt.split()), {"choices": [{"text": "ok"}]})


def _gguf(n_ctx=10):
    from edgeft.generate import GGUFTalker

    t = GGUFTalker.__new__(GGUFTalker)
    t.llm, t.n_ctx = FakeLlama(n_ctx), n_ctx
    return t


def test_gguf_chat_drops_the_oldest_turns_like_the_transformers_chat():
    """Before: llama.cpp's ValueError ended a long GGUF chat with a traceback."""
    from edgeft.generate import Sampling

    t = _gguf()
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "a b c d"},
            {"role": "assistant", "content": "e f g"}, {"role": "user", "content": "h i j"}]
    assert "".join(t.chat(msgs, Sampling(max_new_tokens=2))) == "ok"
    assert t.llm.seen[-1] == ["sys", "h i j"] and len(msgs) == 4
    with pytest.raises(ConfigError, match="does not fit llama.cpp's context of 10"):
        "".join(t.chat([{"role": "user", "content": "w " * 20}], Sampling(max_new_tokens=2)))


def test_gguf_completion_errors_are_clear():
    from edgeft.generate import Sampling

    t = _gguf()
    with pytest.raises(ConfigError, match="prompt is empty"):  # before: llama.cpp's bare AssertionError
        "".join(t.complete("", Sampling(max_new_tokens=2)))
    with pytest.raises(ConfigError, match="does not fit llama.cpp's context of 10"):  # before: ValueError traceback
        "".join(t.complete("w " * 20, Sampling(max_new_tokens=2)))
    assert "".join(t.complete("w w", Sampling(max_new_tokens=2))) == "ok"


def test_a_finite_difference_step_nobody_takes_is_refused():
    """fd_step was sent to fwdgrad's clients and read by none (their derivatives are exact jvps): 1.0 and 1e-9
    trained alike. A run's config holding the old default still loads."""
    from edgeft.federated.config import FederatedConfig

    with pytest.raises(ConfigError, match=r"fd_step: 0\.5: fwdgrad's clients take exact directional derivatives"):
        FederatedConfig.from_dict({"algorithm": "fwdgrad", "fd_step": 0.5})
    assert "fd_step" not in FederatedConfig.from_dict({"algorithm": "fwdgrad", "fd_step": 0.01}).model_dump()


@pytest.mark.parametrize("args,words", [
    (["--days", "0"], r"--days 0: the certificates' lifetime must be at least 1 day"),
    (["--days", "-5"], r"--days -5: "),
    (["--host", ""], r"--host '': a SuperLink's name or IP address"),
    (["--nodes", "-2"], r"--nodes -2: .*cannot be negative"),
])
def test_certs_arguments_are_checked_before_anything_is_written(tmp_path, args, words):
    """--days 0 wrote certificates that had already expired, --days -5 and an empty --host were tracebacks from
    `cryptography`, and --nodes -2 was refused only after the CA was written."""
    from edgeft.federated.deploy import write_credentials

    hosts = [""] if "--host" in args else ["127.0.0.1"]
    days = int(args[1]) if args[0] == "--days" else 30
    nodes = int(args[1]) if args[0] == "--nodes" else 0
    with pytest.raises(ConfigError, match=words):
        write_credentials(tmp_path / "certs", hosts, days, nodes)
    assert not (tmp_path / "certs").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"file is a file, not a folder"):
        write_credentials(tmp_path / "file" / "certs", ["127.0.0.1"])


def test_federate_app_keeps_a_folders_own_files_and_names_a_file_in_the_way(tmp_path):
    """`federate ... app DEST` replaced DEST's own pyproject.toml and README.md without a word, and a DEST that is
    a file was a FileExistsError traceback. An app edgeft wrote before is rewritten."""
    from edgeft.federated.config import FederatedConfig
    from edgeft.federated.deploy import write_app

    cfg = FederatedConfig.from_dict({"algorithm": "fedit", "model": "smollm2-135m", "task": "sst2"})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pyproject.toml").write_text("[project]\nname = 'my-project'\n")
    with pytest.raises(ConfigError, match=r"mine: holds pyproject.toml that edgeft did not write"):
        write_app(mine, cfg)
    assert (mine / "pyproject.toml").read_text() == "[project]\nname = 'my-project'\n"
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"f is a file, not a folder"):
        write_app(tmp_path / "f", cfg)
    again = write_app(write_app(tmp_path / "app", cfg), cfg.model_copy(update={"rounds": 7}))
    assert "rounds = 7" in (again / "pyproject.toml").read_text()
