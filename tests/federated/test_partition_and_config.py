from collections import Counter

import numpy as np
import pytest

from edgeft.data.tasks import DOLLY_TRAIN_FILES, load_dolly_records
from edgeft.errors import ConfigError, DataError
from edgeft.federated.config import FederatedConfig, config_from_dict
from edgeft.federated.partition import group_key, partition


@pytest.fixture(scope="module")
def dolly():
    return load_dolly_records(DOLLY_TRAIN_FILES)


def _covers(parts, n, excluded=()):
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat)), "a row went to two clients"
    assert set(flat) == set(range(n)) - set(excluded)


def test_iid_split_is_disjoint_complete_and_seeded(dolly):
    a = partition(dolly, 10, "iid", seed=3)
    _covers(a, len(dolly))
    assert max(map(len, a)) - min(map(len, a)) <= 1
    assert a == partition(dolly, 10, "iid", seed=3)
    assert a != partition(dolly, 10, "iid", seed=4)


def test_dirichlet_over_categories_like_fedkseed(dolly):
    """200 clients, alpha 0.5, one category held out: skewed, seeded, nobody gets the held-out rows."""
    parts = partition(dolly, 200, "dirichlet", alpha=0.5, seed=0, holdout="summarization")
    held = [i for i, ex in enumerate(dolly) if ex["category"] == "summarization"]
    _covers(parts, len(dolly), held)
    assert min(map(len, parts)) >= 10
    assert parts == partition(dolly, 200, "dirichlet", alpha=0.5, seed=0, holdout="summarization")
    # skew: with alpha=0.5 a typical client's largest category dominates; with alpha=1000 it does not
    def dominance(ps):
        return np.median([Counter(group_key(dolly[i]) for i in p).most_common(1)[0][1] / len(p) for p in ps])
    assert dominance(parts) > 0.4
    assert dominance(partition(dolly, 200, "dirichlet", alpha=1000.0, seed=0)) < 0.3


def test_per_task_split_gives_each_client_one_category(dolly):
    parts = partition(dolly, 7, "task", holdout="open_qa")
    assert all(len({group_key(dolly[i]) for i in p}) == 1 for p in parts)
    with pytest.raises(ConfigError, match="one client per task: this data has 8"):
        partition(dolly, 5, "task")


def test_partition_errors_name_the_problem(dolly):
    with pytest.raises(ConfigError, match="holdout category 'poetry' does not occur"):
        partition(dolly, 4, "dirichlet", holdout="poetry")
    with pytest.raises(ConfigError, match="neither categories nor labels"):
        partition([{"id": i, "text": "x"} for i in range(20)], 2, "dirichlet")
    with pytest.raises(DataError, match="could not give each of 3 clients"):
        partition([{"id": i, "label": i % 2} for i in range(40)], 3, "dirichlet", alpha=1e-4, seed=0)


def test_fedkseed_refuses_what_breaks_exact_replay():
    with pytest.raises(ConfigError, match="lr_schedule=constant"):
        config_from_dict({"algorithm": "fedkseed", "lr_schedule": "linear"})
    with pytest.raises(ConfigError, match="weight_decay=0"):
        config_from_dict({"algorithm": "fedkseed-pro", "weight_decay": 0.01})
    config_from_dict({"algorithm": "fedit", "lr_schedule": "linear", "weight_decay": 0.01})  # fine for FedIT


def test_config_errors_are_clean():
    with pytest.raises(ConfigError, match="rounds_: unknown key"):
        config_from_dict({"algorithm": "fedit", "rounds_": 3})
    with pytest.raises(ConfigError, match="clients_per_round .5. exceeds clients .4."):
        config_from_dict({"algorithm": "fedit", "clients": 4, "clients_per_round": 5})
    with pytest.raises(ConfigError, match="offered for fedit only"):
        config_from_dict({"algorithm": "fedkseed", "secagg": True})
    with pytest.raises(ConfigError, match="at least 3 clients per round"):
        config_from_dict({"algorithm": "fedit", "secagg": True, "clients_per_round": 2})


def test_run_config_round_trip_is_flat_scalars():
    cfg = FederatedConfig(algorithm="fedit", method_options={"r": 4, "target_modules": ["q_proj"]}, rounds=5,
                          holdout_category=None)
    rc = cfg.to_run_config()
    assert all(isinstance(v, (str, int, float, bool)) for v in rc.values())
    assert "holdout-category" not in rc and rc["rounds"] == 5
    assert FederatedConfig.from_run_config(rc) == cfg
    zo = FederatedConfig(algorithm="fedkseed", zo_base="full", zo_params=["norm"])
    rc = zo.to_run_config()
    assert rc["zo-params"] == '["norm"]' and FederatedConfig.from_run_config(rc) == zo


def test_zo_params_only_for_zeroth_order_algorithms():
    with pytest.raises(ConfigError, match="zo_params selects what zeroth-order"):
        config_from_dict({"algorithm": "fedit", "zo_params": ["norm"]})
    with pytest.raises(ConfigError, match="needs at least one name"):
        config_from_dict({"algorithm": "fedkseed", "zo_params": []})


def test_val_samples_errors_name_the_option():
    from edgeft.federated.session import data_and_validation

    with pytest.raises(ConfigError, match="val_samples"):
        config_from_dict({"algorithm": "fedit", "val_samples": 16})
    cfg = config_from_dict({"algorithm": "fedkseed", "task": "dolly", "train_samples": 30, "val_samples": 30,
                            "clients": 2})
    with pytest.raises(ConfigError, match="val_samples=30 leaves no training rows"):
        data_and_validation(cfg)


def test_min_clients_defaults_to_half_a_round_and_cannot_exceed_it():
    assert FederatedConfig(algorithm="fedit", clients=10, clients_per_round=5).required_clients == 3
    assert FederatedConfig(algorithm="fedit", clients=10, clients_per_round=1).required_clients == 1
    assert FederatedConfig(algorithm="fedit", clients=10, clients_per_round=5, min_clients=5).required_clients == 5
    with pytest.raises(ConfigError, match=r"min_clients \(6\) exceeds clients_per_round \(5\)"):
        config_from_dict({"algorithm": "fedit", "clients": 10, "clients_per_round": 5, "min_clients": 6})
    with pytest.raises(ConfigError, match="min_clients"):
        config_from_dict({"algorithm": "fedit", "min_clients": 0})
    # an app written without min_clients keeps the default under a later --run-config clients-per-round
    run_config = FederatedConfig(algorithm="fedit", clients=10, clients_per_round=8).to_run_config()
    assert "min-clients" not in run_config
    assert FederatedConfig.from_run_config({**run_config, "clients-per-round": 2}).required_clients == 1


def test_task_options_round_trip_and_are_checked_as_finetunes():
    cfg = FederatedConfig(algorithm="fedit", task="mail.csv", task_options={"text_column": "body", "kind": "classification"})
    assert FederatedConfig.from_run_config(cfg.to_run_config()) == cfg
    own = {"prompt_template": "Mail: {text}\nWhich folder?", "label_words": ["home", "work"]}  # a list survives too
    cfg = FederatedConfig(algorithm="fedit", task="mail.csv", task_options=own)
    assert FederatedConfig.from_run_config(cfg.to_run_config()).task_options == own
    with pytest.raises(ConfigError, match=r"task_options\.text_colum: unknown key, did you mean 'text_column'"):
        config_from_dict({"algorithm": "fedit", "task": "mail.csv", "task_options": {"text_colum": "body"}})
    with pytest.raises(ConfigError, match=r"\['train_samples'\] are set by the run's own keys"):
        config_from_dict({"algorithm": "fedit", "task_options": {"train_samples": 5}})


def test_a_task_options_problem_names_the_file_it_is_in(tmp_path):
    """Every other key's problem starts with the file's name; task_options' said 'federated config:' instead."""
    path = tmp_path / "fed.yaml"
    path.write_text("algorithm: fedit\ntask: mail.csv\ntask_options: {text_colum: body}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: task_options\.text_colum: unknown key, did you mean"):
        FederatedConfig.load(path)
    with pytest.raises(ConfigError, match=r"^command line: task_options\.kind: Input should be"):
        FederatedConfig.load(None, {"algorithm": "fedit", "task": "mail.csv", "task_options": {"kind": "text"}})


@pytest.mark.parametrize("keys, message", [
    ({"algorithm": "fedit", "method_options": {"bogus": 1}}, r"method 'lora' options: bogus: unknown option"),
    ({"algorithm": "fedkseed", "zo_base": "nope"}, r"unknown base method 'nope'"),
])
def test_a_bad_method_option_stops_before_flower_starts(tmp_path, monkeypatch, keys, message):
    """These stopped the run only once Ray had started and a client had loaded the model (15 s and more)."""
    import json

    import flwr.simulation

    from edgeft.federated.simulation import run_federated

    data = tmp_path / "notes.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q {i}", "response": f"a {i}"}) + "\n" for i in range(8)))

    def started(**_):
        raise AssertionError("Flower's simulation started")

    monkeypatch.setattr(flwr.simulation, "run_simulation", started)
    cfg = FederatedConfig(**keys, task=str(data), clients=2, out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=message):
        run_federated(cfg)


def test_one_client_says_that_clients_per_round_is_the_default_and_what_to_set():
    """`--clients 1` alone stopped on 'clients_per_round (2) exceeds clients (1)', a key the user never gave."""
    with pytest.raises(ConfigError, match=r"clients_per_round \(2, its default\) exceeds clients \(1\): set "
                                          r"--clients-per-round \(clients_per_round\) to 1 or fewer"):
        FederatedConfig.load(None, {"algorithm": "fedit", "clients": 1})


def test_a_users_instruction_file_with_categories_splits_by_them(tmp_path):
    """A Dolly-shaped file of the user's lost its 'category' field, so --partition dirichlet and
    --holdout-category stopped on 'neither categories nor labels: use --partition iid' (even with iid)."""
    import json

    from edgeft.data import TaskConfig, load_task

    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q {i}", "response": f"a {i}", "category": f"c{i % 3}"})
                            + "\n" for i in range(30)))
    task = load_task(TaskConfig(name="mine", data_file=str(data), dev_file=str(data)))
    parts = partition(task.train, 2, "iid", holdout="c0")
    assert sorted(i for p in parts for i in p) == [i for i in range(30) if i % 3]
    bare = [{k: v for k, v in ex.items() if k != "category"} for ex in task.train]
    with pytest.raises(ConfigError, match="use --partition iid without --holdout-category"):
        partition(bare, 2, "iid", holdout="c0")
