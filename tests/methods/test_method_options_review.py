"""Method options a demanding user gives wrong: each is refused by name with what to give instead, or acts as given,
instead of being accepted and ignored, read as something else, or failing deep in torch with a traceback."""

import pytest

from edgeft.data import TaskConfig, load_task
from edgeft.errors import CacheError, ConfigError
from edgeft.methods import get_method
from edgeft.methods.pac.stores import DiskStore
from edgeft.methods.pac.taps import parse_taps
from edgeft.models import load_backbone


@pytest.mark.parametrize("method, options, field", [
    ("lora", {"r": True}, "r"),  # was rank 1
    ("lora", {"layers": [True]}, "layers"),  # was block 1
    ("pac", {"taps": True}, "taps"),  # was every block
    ("pac", {"heads": False}, "heads"),  # was no side attention
])
def test_a_yes_no_value_is_not_read_as_a_number(method, options, field):
    with pytest.raises(ConfigError, match=f"{field}: got a yes/no value"):
        get_method(method, options)
    assert get_method("pac", {"verify": False}).options.verify is False  # where a yes/no is the type, it stays one


@pytest.mark.parametrize("method, options", [("mezo", {"lr": float("inf")}), ("mezo", {"eps": float("inf")}),
                                             ("pac", {"cache_budget_mb": float("inf")})])
def test_an_infinite_option_is_refused(method, options):
    """(MeZO at lr=.inf saved an adapter of NaN and reported success)"""
    with pytest.raises(ConfigError, match=f"{next(iter(options))}: Input should be a finite number"):
        get_method(method, options)


def test_fwdgrad_refuses_a_finite_difference_step_it_never_takes():
    """The directional derivatives are exact jvps: h=0.5 trained the same weights as the default."""
    with pytest.raises(ConfigError, match="h: 0.5: fwdgrad takes exact directional derivatives.*leave h out"):
        get_method("fwdgrad", {"h": 0.5})
    assert "h" not in get_method("fwdgrad", {"h": 0.01}).options.model_dump()  # older configs and adapter notes


def test_base_options_errors_name_the_option_they_came_from():
    with pytest.raises(ConfigError, match=r"^mezo option base_options \(the options of its base method 'full'\): "
                                          r"rr: unknown option"):
        get_method("mezo", {"base_options": {"rr": 3}})
    with pytest.raises(ConfigError, match=r"^fwdgrad option base_options .*'lora'\): r: Input should be greater"):
        get_method("fwdgrad", {"base": "lora", "base_options": {"r": 0}})


def test_pac_taps_are_named_as_given_and_an_empty_list_is_refused():
    with pytest.raises(ConfigError, match=r"block\(s\) \[-9\] outside 0..3 \(or -4..-1"):  # was reported as [-5]
        parse_taps([-9], 4)
    assert parse_taps([-4, -1], 4) == (0, 3)
    with pytest.raises(ConfigError, match="an empty list taps no block"):  # was the last block alone, unsaid
        get_method("pac", {"taps": []})
    with pytest.raises(ConfigError, match=r"K >= 1 \(got -1\); block indices are a list, e.g. taps=\[-1\]"):
        parse_taps(-1, 4)


def test_a_pac_cache_dir_asks_for_a_disk_cache(tmp_path):
    """With the default cache=memory the folder was ignored, without a word."""
    assert get_method("pac", {"cache_dir": str(tmp_path)}).options.cache == "disk"
    assert get_method("pac", {"cache_dir": str(tmp_path), "cache": "off"}).options.cache == "off"


def test_a_pac_cache_dir_that_is_a_file_is_a_named_error(tmp_path):
    """(was FileExistsError / NotADirectoryError tracebacks)"""
    (tmp_path / "notes.txt").write_text("mine")
    for where in (tmp_path / "notes.txt", tmp_path / "notes.txt" / "sub"):
        with pytest.raises(CacheError, match="cannot be the activation cache's folder.*point cache_dir at a folder"):
            DiskStore(where, "fp", {})
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_prompt_tuning_beyond_an_encoders_positions_is_refused(tiny_bert):
    """Virtual tokens take positions: past BERT's table the first batch failed in its embeddings (RuntimeError)."""
    task = load_task(TaskConfig(name="sst2", train_samples=4, dev_samples=2, max_length=32))
    bb = load_backbone(str(tiny_bert), head="sequence_classification", num_labels=2)
    limit = bb.arch.max_positions
    with pytest.raises(ConfigError, match=f"num_virtual_tokens={limit} \\+ --max-length 32 .* has {limit} .*"
                                          f"num_virtual_tokens={limit - 32} or less"):
        get_method("prompt", {"num_virtual_tokens": limit, "init": "random"}).prepare(bb, task)
    get_method("prompt", {"num_virtual_tokens": limit - 32, "init": "random"}).prepare(bb, task)  # fits exactly


@pytest.mark.parametrize("targets, match", [(["q_proj", "qq_proj"], r"\['qq_proj'\] match no module"),  # was dropped
                                            ([], r"\[\] \(an empty list\) names no module")])  # was the defaults
def test_lora_target_modules_that_wrap_nothing_are_refused(tiny_llama, targets, match):
    task = load_task(TaskConfig(name="sst2", train_samples=4, dev_samples=2, max_length=32))
    bb = load_backbone(str(tiny_llama), head="causal_lm")
    with pytest.raises(ConfigError, match=match + ".*linear layers are named .*q_proj"):
        get_method("lora", {"target_modules": targets}).prepare(bb, task)


def test_edgeft_methods_shows_the_range_each_option_takes():
    """`r=0` and `dropout=1.5` were refused by bounds the table never showed."""
    from edgeft.cli.methods import option_rows
    from edgeft.methods import METHODS

    types = {name: kind for name, kind, _, _ in option_rows(METHODS["lora"])}
    assert types["r"] == "int (>= 1)" and types["dropout"] == "float (>= 0.0, < 1.0)"
    assert types["layers"] == "list[int] | None"
    assert "h" not in {name for name, *_ in option_rows(METHODS["fwdgrad"])}


def test_fwdgrad_over_pac_reads_the_activation_cache(tiny_llama):
    """fwdgrad's vmapped jvp failed in PAC's cache lookup ('Cannot access data pointer'), so base=pac ran only with
    cache=off; with an exact (fp32) cache its step is the cache-less one."""
    import torch

    from edgeft.data.features import Featurizer, objective_for
    from edgeft.train.objective import forward

    task = load_task(TaskConfig(name="sst2", train_samples=8, dev_samples=2, max_length=24))
    tokenizer = load_backbone(str(tiny_llama), head="causal_lm").tokenizer
    feat = Featurizer(task, tokenizer, objective_for(task, "causal_lm"), 24)
    batch = feat.collate(feat.encode(task.train[:4]))

    def loss_fn(model, b):
        return forward(model, b, feat.objective, feat.label_token_ids)[0]

    def stepped(cache: str) -> list:
        method = get_method("fwdgrad", {"base": "pac", "base_options": {"cache": cache, "cache_dtype": "fp32",
                                                                        "tap_norm": "token", "dropout": 0.0}})
        torch.manual_seed(0)
        model = method.prepare(load_backbone(str(tiny_llama), head="causal_lm"), task)
        before = [p.detach().clone() for p in method.trainable_parameters(model)]
        method.train_step(model, batch, loss_fn)
        method.train_step(model, batch, loss_fn)  # the second reads what the first stored
        after = [p.detach().clone() for p in method.trainable_parameters(model)]
        assert any(not torch.equal(a, b) for a, b in zip(before, after))  # it trained
        return after

    cached, plain = stepped("memory"), stepped("off")
    assert all(torch.isfinite(p).all() for p in cached)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(cached, plain))


@pytest.mark.parametrize("name, lr", [("mezo", 1e-6), ("fwdgrad", 1e-3), ("mezo", 3e-5)])
def test_a_zeroth_order_run_reports_the_lr_its_steps_take(name, lr):
    """The trainer logged Method.default_lr (1e-4) as the run's lr while MeZO stepped at its own 1e-6."""
    options = {} if lr == get_method(name).Options().lr else {"lr": lr}
    assert get_method(name, options).lr_for() == lr


def test_another_methods_option_says_whose_it_is():
    """`--method pac --option r=4` said only 'unknown option'."""
    with pytest.raises(ConfigError, match=r"r: unknown option \(.*; r is an option of lora: use --method lora\)"):
        get_method("pac", {"r": 4})
    with pytest.raises(ConfigError, match=r"r is an option of lora: give it as --option 'base_options=\{r: \.\.\.\}'"):
        get_method("mezo", {"base": "lora", "r": 4})


def test_an_option_that_acts_only_with_another_says_so():
    """init_text with init=random and on_budget=recompute without cache_budget_mb were dropped without a word; an
    adapter's note (every option, at its default too) still loads."""
    with pytest.raises(ConfigError, match=r"init_text: acts only with init=text"):
        get_method("prompt", {"init": "random", "init_text": "Say yes or no."})
    with pytest.raises(ConfigError, match=r"on_budget: acts only with cache_budget_mb"):
        get_method("pac", {"on_budget": "recompute"})
    for name, opts in (("prompt", {"init": "random"}), ("pac", {"cache_budget_mb": 1.0, "on_budget": "recompute"})):
        note = get_method(name, opts).options.model_dump()
        assert get_method(name, note).options.model_dump() == note
