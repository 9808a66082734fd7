"""Deploying the same apps for real: TLS certificates, the Flower App folder, and a loopback federation.

`make_certificates` writes a private CA and a SuperLink certificate (what docs/federated.md does with
openssl, done with the `cryptography` package Flower already depends on). `write_app` writes the Flower
App (`pyproject.toml` whose components are edgeft's apps and whose run_config is the FederatedConfig)
that `flwr run` bundles and submits. `LocalFederation` starts a SuperLink and SuperNodes as separate OS
processes on 127.0.0.1 with TLS, runs an app on them and stops every process it started.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from edgeft.errors import ConfigError
from edgeft.federated.config import FederatedConfig

CONNECTION = "edgeft-local"


# -- certificates ----------------------------------------------------------------------------------


def make_certificates(dest: Path, hosts: list[str], days: int = 30) -> dict[str, Path]:
    """A self-signed CA (ca.crt) and a server certificate (server.pem, server.key) valid for `hosts`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeft federation CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": dest / "ca.crt", "cert": dest / "server.pem", "key": dest / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


# -- the Flower App --------------------------------------------------------------------------------


def write_app(dest: Path, cfg: FederatedConfig) -> Path:
    """A Flower App folder: pyproject.toml pointing at edgeft's apps, run_config = this configuration."""
    import tomli_w

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    run_config = cfg.model_copy(update={"out": str(Path(cfg.out).resolve())}).to_run_config()
    doc = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": "edgeft-federated", "version": "1.0.0", "license": "Apache-2.0",
                    "description": f"edgeft {cfg.algorithm} on {cfg.model} / {cfg.task}",
                    "dependencies": ["flwr>=1.41.0", "edgeft"]},
        "tool": {"flwr": {"app": {
            "publisher": "edgeft",
            "components": {"serverapp": "edgeft.federated.apps:server_app",
                           "clientapp": "edgeft.federated.apps:client_app"},
            "config": run_config,
        }}},
    }
    (dest / "pyproject.toml").write_bytes(tomli_w.dumps(doc).encode())
    (dest / "README.md").write_text("Flower App written by `edgeft federate ... app`; see docs/federated.md.\n")
    return dest


def write_connection(flwr_home: Path, address: str, root_certificates: Optional[Path]) -> Path:
    """The `flwr` CLI's config.toml with one SuperLink connection, `edgeft-local`."""
    import tomli_w

    flwr_home.mkdir(parents=True, exist_ok=True)
    conn: dict = {"address": address}
    if root_certificates:
        conn["root-certificates"] = str(Path(root_certificates).resolve())
    else:
        conn["insecure"] = True
    path = flwr_home / "config.toml"
    path.write_bytes(tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: conn}}).encode())
    return path


# -- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Every process whose parent chain leads to `pid` (read from /proc; the SuperExec detaches itself)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def stop_tree(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM a process and every descendant, wait up to `grace` s, then SIGKILL what is left."""
    pids = _children(proc.pid) + [proc.pid]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


class LocalFederation:
    """A SuperLink and `n` SuperNodes on 127.0.0.1 (separate processes, TLS), for tests and demos.

    with LocalFederation(workdir, supernodes=2) as fed:
        fed.run(app_dir, timeout=300)
    """

    def __init__(self, workdir: Path, supernodes: int = 2, tls: bool = True):
        if supernodes < 1:
            raise ConfigError("a federation needs at least one SuperNode")
        self.workdir = Path(workdir).resolve()
        self.n, self.tls = supernodes, tls
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.flwr_home = self.workdir / "flwr-home"
        self.port = free_port()
        self.env = {**os.environ, "FLWR_HOME": str(self.flwr_home),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONUNBUFFERED": "1"}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        self.logs[name] = log
        handle = open(log, "wb")
        proc = subprocess.Popen(args, cwd=self.workdir, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        handle.close()
        self.procs[name] = proc
        return proc

    def start(self, wait_s: float = 120.0) -> "LocalFederation":
        self.workdir.mkdir(parents=True, exist_ok=True)
        certs = make_certificates(self.workdir / "certs", ["127.0.0.1", "localhost"]) if self.tls else None
        write_connection(self.flwr_home, self.address, certs["ca"] if certs else None)
        tls_args = (["--ssl-ca-certfile", str(certs["ca"]), "--ssl-certfile", str(certs["cert"]),
                     "--ssl-keyfile", str(certs["key"])] if certs else ["--insecure"])
        self._start("superlink", [_bin("flower-superlink"), *tls_args, "--host", "127.0.0.1", "--port",
                                  str(self.port), "--disable-runtime-dependency-installation"])
        self._wait_for_port(self.port, wait_s)
        for i in range(self.n):
            trust = ["--root-certificates", str(certs["ca"])] if certs else ["--insecure"]
            self._start(f"supernode-{i}", [_bin("flower-supernode"), *trust, "--superlink", self.address,
                                           "--port", str(free_port()),
                                           "--node-config", f"partition-id={i} num-partitions={self.n}"])
        for i in range(self.n):
            self.wait_for_log(f"supernode-{i}", "SuperNode ID", wait_s)
        return self

    def _wait_for_port(self, port: int, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc = self.procs["superlink"]
            if proc.poll() is not None:
                raise RuntimeError(f"the SuperLink exited: see {self.logs['superlink']}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"the SuperLink did not open port {port} in {wait_s:.0f} s")

    def wait_for_log(self, name: str, text: str, wait_s: float, after: int = 0) -> int:
        """Wait until `text` appears in a component's log (after byte offset `after`); returns its offset."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            data = self.logs[name].read_bytes()
            at = data.find(text.encode(), after)
            if at >= 0:
                return at
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited before logging '{text}': see {self.logs[name]}")
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not log '{text}' within {wait_s:.0f} s (see {self.logs[name]})")

    def submit(self, app_dir: Path, run_config: Optional[str] = None) -> subprocess.Popen:
        """`flwr run APP edgeft-local --stream` in the background; its output goes to flwr-run.log."""
        args = [_bin("flwr"), "run", str(Path(app_dir).resolve()), CONNECTION, "--stream"]
        if run_config:
            args += ["--run-config", run_config]
        return self._start("flwr-run", args)

    def run(self, app_dir: Path, timeout: float = 600.0) -> int:
        proc = self.submit(app_dir)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_tree(proc)
            raise TimeoutError(f"`flwr run` did not finish in {timeout:.0f} s (see {self.logs['flwr-run']})")

    def kill(self, name: str) -> None:
        """Disconnect a component abruptly (SIGKILL it and its children), as a device losing power."""
        proc = self.procs[name]
        for pid in _children(proc.pid) + [proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            stop_tree(self.procs[name])

    def __enter__(self) -> "LocalFederation":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
