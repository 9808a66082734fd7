"""`edgeft federate` rounds reviewed as a new user: a client stopped mid-round, emulated dropouts, bad inputs.
Each simulation is a tiny random Llama on a few Dolly rows, in this process (its Ray actors are our descendants)."""

import logging
import os
import signal
import subprocess
import sys

import pytest

from edgeft.federated.config import FederatedConfig
from edgeft.federated.session import seeded_rng
from edgeft.federated.simulation import CLIENT_ACTOR, _title, run_federated
from edgeft.processes import descendants, send_signal


def _cfg(tmp_path, model, **kw):
    base = dict(model=str(model), task="dolly", train_samples=60, eval_samples=2, max_length=32, max_new_tokens=2,
                threads=1, batch_size=1, clients=3, clients_per_round=3, rounds=2, algorithm="fedkseed",
                out=str(tmp_path / "run"))
    return FederatedConfig(**{**base, **kw})


def _actors():
    return [pid for pid in descendants(os.getpid()) if _title(pid).startswith(CLIENT_ACTOR)]


class FlowerLog(logging.Handler):
    """Flower's log records of the run (its worker threads log in this process)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append((record.levelno, record.getMessage()))

    def __enter__(self):
        logging.getLogger("flwr").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("flwr").removeHandler(self)


# about 60 s: round 1 waits out its deadline, then Ray restarts the killed actor
def test_a_stopped_client_drops_itself_only_and_the_later_rounds_go_on(tmp_path, tiny_llama):
    """One Ray actor runs the virtual clients in turn. A client stopped (SIGSTOP) mid-round also failed the clients
    queued behind it ('no reply within N s' though they never started), and every later round got no reply, so the
    run stopped. Now the stuck actor is killed at the deadline, the ledger says which client held it and which never
    started, and Ray's new actor runs the next round."""
    cfg = _cfg(tmp_path, tiny_llama, local_steps=60, round_timeout=25)
    stopped, state = [], {"round": 0}

    def progress(rnd, row):
        state["round"] = rnd + 1

    def replied(done, total, failed):  # the server's poll: in round 1, stop the actor once a client has replied
        if state["round"] == 1 and not stopped and done < total:
            stopped.extend(_actors())
            send_signal(stopped, signal.SIGSTOP)

    progress.clients = replied
    try:
        s = run_federated(cfg, progress=progress)
    finally:
        send_signal(stopped, signal.SIGKILL)
    assert stopped
    assert s["stopped"] is None and [r["round"] for r in s["rounds"]] == [0, 1, 2]
    first, second = s["communication"]
    reasons = sorted(d["reason"] for d in first["dropped"])
    assert first["completed"] >= 1 and first["completed"] + len(reasons) == 3
    held = [r for r in reasons if "its client process did not return" in r]
    assert len(held) == 1 and all("never started" in r for r in reasons if r not in held), reasons
    assert all(r.startswith("no reply within 25 s") for r in reasons)
    assert second["completed"] == 3 and s["replay_bit_exact"]


def _seed_with_one_drop(clients, p):
    for seed in range(200):
        drops = [c for c in range(clients) if seeded_rng(seed, 1, c, 7).random() < p]
        if len(drops) == 1:
            return seed, drops[0]
    raise AssertionError("no seed found")


# about 25 s: one round of three clients, one lost on purpose
def test_an_emulated_dropout_is_one_line_not_a_traceback(tmp_path, tiny_llama):
    """--dropout emulates a device lost mid-round: Flower logged an ERROR and a whole traceback for each, as for a
    real client error. Now it is one warning line naming the client and the round, and the ledger's reason."""
    seed, lost = _seed_with_one_drop(3, 0.3)
    cfg = _cfg(tmp_path, tiny_llama, algorithm="fedit", rounds=1, local_steps=2, dropout=0.3, seed=seed,
               round_timeout=120)
    with FlowerLog() as log:
        s = run_federated(cfg)
    assert s["communication"][0]["completed"] == 2
    assert [d["partition"] for d in s["communication"][0]["dropped"]] == [lost]
    errors = [m for level, m in log.records if level >= logging.ERROR]
    assert not errors, errors[:3]
    lines = [m for level, m in log.records if level == logging.WARNING and "dropped" in m]
    assert lines == [f"round 1: partition {lost} dropped: error reply: client {lost} lost mid-round 1 "
                     "(emulated dropout, p=0.3)"]


def test_a_real_client_error_still_raises_through_the_dropout_mod(monkeypatch):
    """Only the planned dropout becomes a quiet error reply; anything else a client raises reaches Flower, which
    shows its traceback."""
    from edgeft.federated import apps
    from edgeft.federated.session import EmulatedDropout

    def lost(msg, context):
        raise EmulatedDropout("client 1 lost mid-round 2 (emulated dropout, p=0.5)")

    def broken(msg, context):
        raise ValueError("a real bug")

    monkeypatch.setattr(apps, "error_reply", lambda msg, reason: ("error reply", msg, reason))
    assert apps.dropout_mod("msg", None, lost) == ("error reply", "msg", "client 1 lost mid-round 2 (emulated "
                                                                          "dropout, p=0.5)")
    with pytest.raises(ValueError, match="a real bug"):
        apps.dropout_mod("msg", None, broken)


def test_a_malformed_data_file_and_a_missing_model_stop_before_the_progress_bar(tmp_path, tiny_llama):
    """A bad row of --data-file was reported after the progress bar had been drawn, and a missing --model folder
    only after Ray had started (20 s), leaving a half-made run folder (config.yaml, events.jsonl)."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "input": "", "response": "b"}\n{"instruction": "c", bad\n')
    base = [sys.executable, "-m", "edgeft.cli", "federate", "--algorithm", "fedit", "--clients", "2", "--rounds", "1"]
    runs = [(["--model", str(tiny_llama), "--data-file", str(bad)], f"{bad}:2: not valid JSON"),
            (["--model", str(tmp_path / "no-model"), "--task", "dolly"], "no such model folder")]
    for i, (args, said) in enumerate(runs):
        out = tmp_path / f"run{i}"
        proc = subprocess.run([*base, *args, "--out", str(out)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr[-2000:]
        assert "fedit rounds" not in proc.stdout + proc.stderr  # the progress bar
        assert not out.exists()


def test_an_infinite_learning_rate_or_alpha_is_refused_by_name():
    """--lr inf trained every round into NaN weights and reported the run as done; --alpha inf failed the Dirichlet
    split with a numpy warning and the advice to use a larger alpha."""
    from edgeft.errors import ConfigError

    for key in ("lr", "alpha", "round_timeout"):
        with pytest.raises(ConfigError, match=f"{key}: Input should be a finite number"):
            FederatedConfig.load(None, {"algorithm": "fedit", key: float("inf")})


def _stop_when(tmp_path, model, ready, what):
    """`edgeft federate` in the background, SIGINT once `ready(pids)` holds; every process it started is remembered
    (pid and start time) so that any left behind is seen, and killed."""
    import time

    from edgeft.processes import alive, start_time

    out = tmp_path / what
    args = [sys.executable, "-m", "edgeft.cli", "federate", "--algorithm", "fedit", "--model", str(model), "--task",
            "dolly", "--train-samples", "60", "--eval-samples", "2", "--clients", "2", "--rounds", "2",
            "--local-steps", "2", "--batch-size", "1", "--max-length", "32", "--max-new-tokens", "2", "--threads", "1",
            "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, deadline = {}, time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            for pid in descendants(proc.pid):
                seen.setdefault(pid, start_time(pid))
            if ready(seen, out):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0][-2000:]
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=120)[0]
        time.sleep(2)
        left = [pid for pid, t in seen.items() if alive(pid) and start_time(pid) == t]
        return proc.returncode, output, [_title(pid) for pid in left], out
    finally:
        proc.kill()
        send_signal([pid for pid, t in seen.items() if alive(pid) and start_time(pid) == t], signal.SIGKILL)


@pytest.mark.parametrize("moment", ["ray starting", "clients' set-up"])
def test_ctrl_c_before_the_first_round_leaves_no_process_and_says_nothing_was_trained(tmp_path, tiny_llama, moment):
    """Ctrl-C while Ray started (ray.init cut short) left two Ray processes running for ever, and the CLI said the
    model and metrics of the rounds done were in --out, which did not exist; Ctrl-C while the server set the run up
    ended in 'error: stopped by the user' with exit status 2 instead of the stop's 130."""
    if moment == "ray starting":
        def ready(seen, out):
            return any(_title(pid).startswith("ray::RuntimeEnvAgent") for pid in seen)  # ray.init under way
    else:
        def ready(seen, out):
            return (out / "events.jsonl").is_file()
    rc, output, left, out = _stop_when(tmp_path, tiny_llama, ready, moment.split()[0])
    assert rc == 130 and "stopped by SIGINT before its first round: no model or metrics were written" in output, \
        output[-2000:]
    assert "error:" not in output and not (out / "metrics.json").exists()
    assert not left, left
