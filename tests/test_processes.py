"""Process trees started in sessions of their own are stopped by the reaper when their starter is killed outright
(SIGKILL: no `finally`, no `__exit__` runs), and left alone when the starter said it stopped them itself."""

import json
import signal
import subprocess
import sys
import textwrap
import time

from edgeft.processes import alive, send_signal

# A starter like LocalFederation: a child in a session of its own whose own child detaches into yet another
# session (as Flower's SuperExec does), all watched by a Reaper; prints the pids, then waits to be killed.
STARTER = textwrap.dedent("""
    import json, subprocess, sys, time
    from edgeft.processes import Reaper, descendants
    reaper = Reaper(grace=2.0)
    grandchild = "import subprocess, time; subprocess.Popen(['sleep', '300'], start_new_session=True); time.sleep(300)"
    child = subprocess.Popen([sys.executable, "-c", grandchild], start_new_session=True)
    reaper.watch(child.pid)
    deadline = time.time() + 30
    while len(descendants(child.pid)) < 1 and time.time() < deadline:
        time.sleep(0.05)
    print(json.dumps([child.pid, *descendants(child.pid)]), flush=True)
    if sys.argv[1] == "close":
        reaper.close()
        print("closed", flush=True)
    time.sleep(300)
""")


def _start(script: str, *args: str):
    """Run a starter script; returns it and the pids it printed (the processes it started)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


def _left_after_killing(starter: subprocess.Popen, pids: list[int], seconds: float) -> list[int]:
    """SIGKILL the starter; which of `pids` are still alive `seconds` later (or as soon as none is)."""
    assert all(alive(p) for p in pids)
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def test_a_starter_killed_outright_leaves_no_process_behind():
    proc, pids = _start(STARTER, "watch")
    try:
        assert len(pids) == 2
        left = _left_after_killing(proc, pids, 15)
        assert left == [], f"outlived their starter: {left}"
    finally:
        send_signal(pids, signal.SIGKILL)


def test_a_closed_reaper_signals_nothing_when_its_starter_goes():
    proc, pids = _start(STARTER, "close")
    try:
        assert proc.stdout.readline().strip() == "closed"
        assert _left_after_killing(proc, pids, 1.5) == pids
    finally:
        send_signal(pids, signal.SIGKILL)


def test_a_local_federation_whose_starter_is_killed_stops_with_it(tmp_path):
    starter = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from edgeft.federated.deploy import LocalFederation
        from edgeft.processes import descendants
        fed = LocalFederation(Path({str(tmp_path / "fed")!r}), supernodes=1, tls=False).start()
        print(json.dumps([pid for p in fed.procs.values() for pid in [p.pid, *descendants(p.pid)]]), flush=True)
        time.sleep(300)
    """)
    proc, pids = _start(starter)
    try:
        assert len(pids) >= 2  # a SuperLink, a SuperNode, their SuperExecs
        left = _left_after_killing(proc, pids, 20)
        assert left == [], f"Flower processes outlived their starter: {left}"
    finally:
        send_signal(pids, signal.SIGKILL)
