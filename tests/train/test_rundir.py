"""Run directories are never silently reused, and checkpoints load without running code (issue 16)."""

import json
import os
import subprocess
import sys
import tempfile

import pytest
import torch
import yaml

from edgeft.errors import CacheError, ConfigError
from edgeft.train.recipe import config_from_dict, run_finetune
from edgeft.train.rundir import claim


def _cfg(model, out, method="lora", **top):
    return config_from_dict({
        "model": str(model), "method": method, "out": str(out), "eval_before": False,
        "task": {"name": "sst2", "train_samples": 8, "dev_samples": 4, "max_length": 16},
        "train": {"epochs": 1, "batch_size": 8, "lr": 5e-3}, **top,
    })


class _Evil:
    """Unpickling this runs `touch <marker>`: what a crafted checkpoint from elsewhere could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_claim_refuses_a_non_empty_folder_and_names_the_ways_out(tmp_path):
    claim(tmp_path / "new")  # missing: fine, and nothing is created yet
    assert not (tmp_path / "new").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"used: the output folder is not empty \(metrics.json\).*--resume.*"
                                          r"--overwrite"):
        claim(tmp_path / "used")
    with pytest.raises(ConfigError, match="contradict"):
        claim(tmp_path / "used", resume=True, overwrite=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        claim(tmp_path / "afile", overwrite=True)


HOLDER = """
import sys, time
from edgeft.train.rundir import claim
run = claim(sys.argv[1], overwrite=True)
run.begin({"method": "lora"})
print("claimed", flush=True)
time.sleep(300)
"""


def test_a_folder_another_process_is_running_into_is_refused_even_with_overwrite(tmp_path, tiny_llama):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        before = (out / "config.yaml").read_text()
        for overwrite in (True, False):
            with pytest.raises(ConfigError, match=rf"run: another edgeft run is writing into this output folder "
                                                  rf"\(pid {holder.pid}, since .*\)\. Wait for it"):
                run_finetune(_cfg(tiny_llama, out, "bitfit", overwrite=overwrite))
        assert (out / "config.yaml").read_text() == before and sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock with it
        holder.wait()
    run_finetune(_cfg(tiny_llama, out, "bitfit", overwrite=True))
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "bitfit"


def test_one_process_may_claim_a_folder_again_and_a_released_claim_frees_it(tmp_path):
    first = claim(tmp_path / "run")
    again = claim(tmp_path / "run")  # e.g. a later run in this process resuming it
    probe = [sys.executable, "-c", "import sys; from edgeft.train.rundir import claim; claim(sys.argv[1])",
             str(tmp_path / "run")]
    first.release()
    assert subprocess.run(probe, capture_output=True).returncode != 0  # `again` still holds it
    again.release()
    done = subprocess.run(probe, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_lock_falls_back_to_the_temporary_folder_when_edgeft_home_cannot_be_written(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("EDGEFT_HOME", str(tmp_path / "a-file" / "home"))  # cannot be made: its parent is a file
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    run = claim(tmp_path / "run")
    try:
        assert [p.name for p in (tmp_path / "tmp").iterdir()] == [f"edgeft-run-locks-{os.getuid()}"]
        assert run.lock.held
    finally:
        run.release()


def test_finetune_refuses_an_earlier_run_and_overwrite_replaces_only_its_files(tmp_path, tiny_llama):
    out = tmp_path / "run"
    run_finetune(_cfg(tiny_llama, out, "lora"))
    (out / "notes.txt").write_text("mine")
    before = (out / "metrics.json").read_text()
    with pytest.raises(ConfigError, match="not empty"):
        run_finetune(_cfg(tiny_llama, out, "bitfit"))
    assert (out / "metrics.json").read_text() == before
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "lora"

    run_finetune(_cfg(tiny_llama, out, "bitfit", overwrite=True))
    assert sorted(p.name for p in (out / "adapter").iterdir()) == ["bitfit.safetensors", "edgeft_adapter.json"]
    kinds = [json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert kinds.count("start") == 1 and kinds[-1] == "done"  # one run's events, not two
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "bitfit"
    assert (out / "notes.txt").read_text() == "mine"  # not edgeft's: left alone


def test_a_run_with_bad_input_leaves_the_earlier_run_untouched(tmp_path, tiny_llama):
    out = tmp_path / "run"
    run_finetune(_cfg(tiny_llama, out))
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "a"}\n{"text": "broken"\n')
    cfg = config_from_dict({"model": str(tiny_llama), "method": "bitfit", "out": str(out), "overwrite": True,
                            "task": {"name": str(bad)}})
    with pytest.raises(Exception, match="bad.jsonl:2"):
        run_finetune(cfg)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files


def test_resume_without_a_checkpoint_says_so(tmp_path, tiny_llama):
    said = []
    metrics = run_finetune(_cfg(tiny_llama, tmp_path / "fresh", resume=True), say=said.append)
    resume = [line for line in said if line.startswith("--resume")]
    assert len(resume) == 1 and str(tmp_path / "fresh") in resume[0] and "from scratch" in resume[0]
    events = [json.loads(line) for line in (tmp_path / "fresh" / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "resume_missing" for e in events)
    assert metrics["resumed_from"] is None


def test_resume_does_not_execute_a_crafted_checkpoint(tmp_path, tiny_llama):
    out = tmp_path / "run"
    marker = tmp_path / "pwned"
    (out / "checkpoint").mkdir(parents=True)
    torch.save({"trainables": _Evil(marker)}, out / "checkpoint" / "state.pt")
    with pytest.raises(CacheError, match=r"state.pt: checkpoint cannot be read safely"):
        run_finetune(_cfg(tiny_llama, out, resume=True))
    assert not marker.exists()


def test_runtime_checkpoint_shards_do_not_execute_code(tmp_path):
    from edgeft.runtime import checkpoint as ckpt

    marker = tmp_path / "pwned"
    d = ckpt.step_dir(tmp_path / "checkpoint", 4)
    d.mkdir(parents=True)
    torch.save({"params": _Evil(marker), "optim": {}}, d / "dev-a.pt")
    with pytest.raises(CacheError, match=r"dev-a.pt: checkpoint shard cannot be read safely"):
        ckpt.load_into(d, {})
    assert not marker.exists()


def test_runtime_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    from edgeft.runtime import checkpoint as ckpt

    lin = torch.nn.Linear(3, 2)
    named = dict(lin.named_parameters())
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1)
    lin(torch.ones(1, 3)).sum().backward()
    opt.step()
    ckpt.save_shard(tmp_path, 1, "dev-a", named, opt, named)
    other = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(other.parameters(), lr=0.1)
    assert ckpt.load_into(ckpt.step_dir(tmp_path, 1), dict(other.named_parameters()), opt2) == 2
    assert torch.equal(other.weight, lin.weight)
    assert torch.equal(opt2.state[other.weight]["exp_avg"], opt.state[lin.weight]["exp_avg"])


def _invoke(*args):
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app

    return CliRunner().invoke(build_app(), list(args))


def _used(folder):
    folder.mkdir()
    (folder / "events.jsonl").write_text('{"event": "start"}\n')
    return folder


def test_every_command_with_an_output_folder_refuses_a_used_one(tmp_path):
    cluster = str(tmp_path.parent / "x.yaml")
    for args in (["launch", "--cluster", cluster, "--task", "sst2", "--out"],
                 ["federate", "--algorithm", "fedit", "--out"],
                 ["compress", "--model", "smollm2-135m", "--method", "rtn", "--out"]):
        out = _used(tmp_path / args[0])
        res = _invoke(*args, str(out))
        assert isinstance(res.exception, ConfigError) and "not empty (events.jsonl)" in str(res.exception), \
            (args[0], res.output, res.exception)
        assert (out / "events.jsonl").read_text() == '{"event": "start"}\n'


def test_compress_overwrite_refuses_to_clear_its_own_input(tmp_path):
    src = _used(tmp_path / "model")
    res = _invoke("compress", "--model", str(src), "--method", "rtn", "--out", str(src), "--overwrite")
    assert isinstance(res.exception, ConfigError) and "holds the input (--model" in str(res.exception)
    assert (src / "events.jsonl").exists()


def test_federate_certs_keeps_an_existing_ca(tmp_path):
    assert _invoke("federate", "certs", str(tmp_path)).exit_code == 0
    ca = (tmp_path / "ca.crt").read_bytes()
    res = _invoke("federate", "certs", str(tmp_path))
    assert isinstance(res.exception, ConfigError) and "ca.crt" in str(res.exception) and "--overwrite" in str(
        res.exception)
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert _invoke("federate", "certs", str(tmp_path), "--overwrite").exit_code == 0
    assert (tmp_path / "ca.crt").read_bytes() != ca


def test_a_checkpoint_written_before_weights_only_still_resumes(tmp_path, tiny_llama):
    import numpy as np

    out = tmp_path / "run"
    run_finetune(_cfg(tiny_llama, out))
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    state["rng"]["numpy"] = np.random.get_state()  # how state.pt stored it before: a numpy array inside
    torch.save(state, out / "checkpoint" / "state.pt")
    again = _cfg(tiny_llama, out, resume=True)
    again.train.epochs = 2
    assert run_finetune(again)["resumed_from"]["epoch"] == 1


def test_resume_with_other_trainables_is_refused_before_the_config_is_rewritten(tmp_path, tiny_llama):
    """`finetune --resume` with LoRA r=4 over a run of r=8 failed deep in torch ('The size of tensor a (4) must match
    the size of tensor b (8)'), after rewriting the run's config.yaml; `launch` already refused it."""
    out = tmp_path / "run"
    run_finetune(_cfg(tiny_llama, out, method_options={"r": 8}))
    config = (out / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"other trainables \(method_options: \{'r': 8\} then, \{'r': 4\} now\)"):
        run_finetune(_cfg(tiny_llama, out, method_options={"r": 4}, resume=True))
    with pytest.raises(ConfigError, match=r"other trainables \(method: 'lora' then, 'bitfit' now\)"):
        run_finetune(_cfg(tiny_llama, out, method="bitfit", resume=True))
    assert (out / "config.yaml").read_text() == config
    more = _cfg(tiny_llama, out, method_options={"r": 8}, resume=True)
    more.train.epochs = 2  # more epochs, the same trainables: goes on
    assert run_finetune(more)["resumed_from"]["epoch"] == 1


def test_resume_over_an_unreadable_config_names_the_file(tmp_path):
    from edgeft.train.rundir import check_resume_matches

    (tmp_path / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config.yaml: not readable YAML .*--overwrite or another --out"):
        check_resume_matches(tmp_path, {"model": "smollm2-135m", "method": "lora"})


def test_a_run_folder_removed_mid_run_is_named_not_a_bare_file_error(tmp_path):
    """Deleting --out while a run went on ended it in a raw FileNotFoundError from the next event."""
    import shutil

    with claim(tmp_path / "run") as run:
        run.begin({"model": "m"})
        run.event("start")
        shutil.rmtree(run.path)
        with pytest.raises(ConfigError, match=r"run: the run folder was removed while the run went on"):
            run.event("epoch_end")
        with pytest.raises(ConfigError, match=r"the run folder was removed"):
            run.write_metrics({"x": 1})
