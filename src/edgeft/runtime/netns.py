"""Link emulation by Linux traffic control: one network namespace per rank, a bridge in a hub
namespace, and a token-bucket filter (tc tbf) on each device's veth in both directions.

Only loopback-only namespaces and veth pairs created here are touched, all named edgeft-<pid>x<nonce>-*
(<pid>: the launcher's), and `teardown()` deletes them (deleting a namespace removes its veth ends); a later
launch deletes those of a launcher that was killed before its teardown (`sweep_orphaned_namespaces`).
Used when running as root with `ip` and `tc` on PATH; netem is not always built into the kernel (it is not on the
machine this was written on), so one-way latency stays with the in-process shaper (emulation.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from edgeft.errors import ConfigError


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"link emulation: `{' '.join(cmd)}` failed: {proc.stderr.strip()[:300]}")


def tc_available() -> tuple[bool, str]:
    """(usable, why not) for network namespaces + tc tbf."""
    if os.geteuid() != 0:
        return False, "not running as root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"'{tool}' is not on PATH"
    probe = f"edgeft-probe-{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        _run("ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "p0", "root", "tbf", "rate", "10mbit",
             "burst", "32kb", "latency", "100ms")
        return True, ""
    except ConfigError as err:
        return False, str(err)
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)


_OWNED = re.compile(r"^edgeft-(\d+)x[0-9a-f]+-(?:r\d+|hub)$")


def run_id_for_this_process() -> str:
    """A run's namespace id: this launcher's pid (so a later launch can tell when its owner is gone) and a nonce."""
    return f"{os.getpid()}x{uuid.uuid4().hex[:4]}"


def _is_edgeft_process(pid: int) -> bool:
    try:
        return b"edgeft" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def sweep_orphaned_namespaces() -> list[str]:
    """Delete the namespaces of runs whose launcher is gone: one killed outright (SIGKILL, out of memory) could not
    run its teardown. Only names this module makes are touched, and only when their launcher pid is no longer an
    edgeft process; returns the names deleted."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    gone = []
    for name in (line.split()[0] for line in out.splitlines() if line.strip()):
        owner = _OWNED.match(name)
        if owner and not _is_edgeft_process(int(owner.group(1))):
            if subprocess.run(["ip", "netns", "del", name], capture_output=True).returncode == 0:
                gone.append(name)
    return gone


@dataclass
class NetnsTopology:
    run_id: str
    members: list[tuple[str, float, float]]  # (rank name, uplink bit/s, downlink bit/s); 0 = unshaped
    subnet: str = "10.213"
    namespaces: list[str] = field(default_factory=list)

    def ns(self, i: int) -> str:
        return f"edgeft-{self.run_id}-r{i}"

    @property
    def hub(self) -> str:
        return f"edgeft-{self.run_id}-hub"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{i // 250}.{i % 250 + 2}"

    def setup(self) -> "NetnsTopology":
        try:
            _run("ip", "netns", "add", self.hub)
            self.namespaces.append(self.hub)
            _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.hub, "link", "set", "br0", "up")
            for i, (_, up, down) in enumerate(self.members):
                ns = self.ns(i)
                _run("ip", "netns", "add", ns)
                self.namespaces.append(ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                _run("ip", "-n", ns, "link", "add", "eft0", "type", "veth", "peer", "name", f"h{i}", "netns", self.hub)
                _run("ip", "-n", self.hub, "link", "set", f"h{i}", "master", "br0")
                _run("ip", "-n", self.hub, "link", "set", f"h{i}", "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.address(i)}/16", "dev", "eft0")
                _run("ip", "-n", ns, "link", "set", "eft0", "up")
                if up > 0:
                    self._tbf(ns, "eft0", up)
                if down > 0:
                    self._tbf(self.hub, f"h{i}", down)
        except BaseException:  # a stop signal (processes.Interrupted) too: no namespace is left behind
            self.teardown()
            raise
        return self

    @staticmethod
    def _tbf(ns: str, dev: str, bps: float) -> None:
        rate = max(int(bps), 8000)
        burst = max(rate // 8 // 100, 16 * 1024)  # ~10 ms of traffic, at least 16 KiB
        _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate}bit",
             "burst", str(burst), "latency", "2s")

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(i)]

    def teardown(self) -> None:
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()
