"""Faults caused for real in `edgeft federate`'s simulation: a client process killed or stopped mid-run, and
`--overwrite` over an earlier run's folder. Each run is a tiny random Llama on a few Dolly rows."""

import json
import signal
import subprocess
import sys
import time

import pytest

from edgeft.processes import alive, descendants, send_signal, start_time

EDGEFT = [sys.executable, "-m", "edgeft.cli"]


def _args(model, out, *extra):
    return [*EDGEFT, "federate", "--model", str(model), "--task", "dolly", "--train-samples", "60", "--eval-samples",
            "2", "--max-length", "32", "--max-new-tokens", "2", "--threads", "1", "--batch-size", "1", "--clients", "3",
            "--clients-per-round", "2", "--out", str(out), *extra]


def _title(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


class Federation:
    """`edgeft federate` in the background; every process it starts is remembered (pid and start time), so the test
    can tell whether any outlives it and stop them all whatever happens."""

    def __init__(self, args, out):
        self.out = out
        self.log = open(out.parent / "federate.log", "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.seen = {}

    def look(self):
        for pid in descendants(self.proc.pid):
            self.seen.setdefault(pid, start_time(pid))
        return self.seen

    def wait_for(self, text, timeout=240.0):
        events = self.out / "events.jsonl"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.look()
            if events.exists() and text in events.read_text():
                return
            time.sleep(0.1)
        pytest.fail(f"{text!r} never came: {self.output()[-3000:]}")

    def actors(self):
        return [pid for pid in self.look() if _title(pid).startswith("ray::ClientAppActor")]

    def signal_clients_after_round_1(self, sig) -> None:
        """Once round 1 has ended, send every client actor process `sig`."""
        self.wait_for('"round_end", "round": 1,')
        actors = self.actors()
        assert actors, self.output()[-3000:]
        send_signal(actors, sig)

    def left(self):
        return [pid for pid, t in self.seen.items() if alive(pid) and start_time(pid) == t]

    def output(self):
        self.log.flush()
        return (self.out.parent / "federate.log").read_text()

    def close(self):
        if self.proc.poll() is None:
            self.look()
            self.proc.kill()
        send_signal(self.left(), signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_a_killed_client_process_does_not_stop_the_simulation(tmp_path, tiny_llama):
    """The simulation's one Ray actor serves every virtual client: SIGKILLed (or taken by the out-of-memory killer), it
    stayed dead in Flower's pool and every later message failed, so the run stopped at the next round ("The actor is
    dead"). Now Ray brings it back and reruns the message it held: all rounds complete, the replay stays exact."""
    out = tmp_path / "run"
    fed = Federation(_args(tiny_llama, out, "--algorithm", "fedkseed", "--rounds", "2", "--local-steps", "100",
                           "--round-timeout", "120"), out)
    try:
        fed.signal_clients_after_round_1(signal.SIGKILL)
        fed.proc.wait(timeout=240)
        assert fed.proc.returncode == 0, fed.output()[-3000:]
        s = _metrics(out)
        assert s["stopped"] is None and [r["round"] for r in s["rounds"]] == [0, 1, 2]
        assert s["replay_bit_exact"] and all(c["completed"] >= 1 for c in s["communication"])
    finally:
        fed.close()


# a round timeout, then the stuck actor killed twice (its message reruns once): about 30-60 s
def test_a_stopped_client_process_does_not_keep_federate_and_ray_alive(tmp_path, tiny_llama):
    """A client that never answers (SIGSTOP) is dropped after round_timeout and the run stops early with its rounds
    saved; but Flower's simulation then waited for that client's work before shutting Ray down, so `edgeft federate`
    and every Ray process stayed up for ever after writing metrics.json. Now the stuck actor is killed."""
    out = tmp_path / "run"
    fed = Federation(_args(tiny_llama, out, "--algorithm", "fedkseed", "--rounds", "3", "--local-steps", "20",
                           "--round-timeout", "8"), out)
    try:
        fed.signal_clients_after_round_1(signal.SIGSTOP)
        try:
            fed.proc.wait(timeout=150)
        except subprocess.TimeoutExpired:
            pytest.fail(f"edgeft federate still running 150 s after its client stopped: {fed.output()[-2000:]}")
        assert fed.proc.returncode == 2 and "stopped before round 2 of 3" in fed.output(), fed.output()[-3000:]
        assert _metrics(out)["stopped"]["rounds_done"] == 1
        deadline = time.monotonic() + 30
        while fed.left() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not fed.left(), [(pid, _title(pid)) for pid in fed.left()]
    finally:
        fed.close()


def test_overwrite_keeps_the_earlier_run_until_the_new_one_can_start_and_then_clears_all_of_it(tmp_path, tiny_llama):
    """--overwrite cleared the earlier run's files before the new run's inputs were checked, so a typo (here a split
    that cannot work) lost that run without starting another; and it left ledger.json and seed_pool.npz, so a FedIT
    run over a FedKSeed one kept the old seed pool beside its own files."""
    out = tmp_path / "run"
    out.mkdir()
    earlier = {"metrics.json": "{}", "ledger.json": "[]", "seed_pool.npz": "old", "config.yaml": "algorithm: fedkseed"}
    for name, text in earlier.items():
        (out / name).write_text(text)
    (out / "notes.txt").write_text("mine")
    proc = subprocess.run(_args(tiny_llama, out, "--algorithm", "fedit", "--rounds", "1", "--partition", "dirichlet",
                                "--alpha", "0.01", "--clients", "30", "--overwrite"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "could not give each of 30 clients" in proc.stderr, proc.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == {*earlier, "notes.txt"}

    proc = subprocess.run(_args(tiny_llama, out, "--algorithm", "fedit", "--rounds", "1", "--local-steps", "1",
                                "--overwrite"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out / "seed_pool.npz").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "ledger.json").read_text()) and _metrics(out)["algorithm"] == "fedit"
