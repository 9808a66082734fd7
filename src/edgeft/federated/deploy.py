"""Deploying the same apps for real: TLS certificates, the Flower App folder, and a loopback federation.

`make_certificates` writes a private CA and a SuperLink certificate (what docs/federated.md does with
openssl, done with the `cryptography` package Flower already depends on); `make_node_keys` the SuperNodes'
authentication key pairs. `check_superlink` tells a SuperNode what is wrong with its TLS setting before
Flower retries it forever. `write_app` writes the Flower App (`pyproject.toml` whose components are
edgeft's apps and whose run_config is the FederatedConfig) that `flwr run` bundles and submits.
`LocalFederation` starts a SuperLink and SuperNodes as separate OS processes on 127.0.0.1 with TLS and
node authentication, runs an app on them and stops every process it started.
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
from edgeft.paths import file_in_the_way
from edgeft.processes import Reaper, descendants, free_port, send_signal, stop_tree, stop_trees

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
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
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
            # key identifiers: Python 3.13's default TLS context verifies strictly (VERIFY_X509_STRICT) and refused
            # a server certificate without them ("Missing Authority Key Identifier")
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": dest / "ca.crt", "cert": dest / "server.pem", "key": dest / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


def write_credentials(dest: Path, hosts: list[str], days: int = 30, nodes: int = 0,
                      overwrite: bool = False) -> dict[str, Path]:
    """`edgeft federate certs`: a CA and a SuperLink certificate (+ `nodes` SuperNode key pairs) in `dest`,
    refusing to replace files there unless `overwrite`: a new CA locks out every SuperNode that trusts the old."""
    dest = Path(dest)
    _check_credential_inputs(dest, hosts, days, nodes)
    held = sorted(p.name for p in dest.iterdir()) if dest.is_dir() else []
    if held and not overwrite:
        raise ConfigError(f"{dest}: already holds {', '.join(held)}; a new CA would stop every SuperNode "
                          "given the old ca.crt from connecting. Use --overwrite to replace it, or another folder.")
    paths = make_certificates(dest, hosts, days)
    if nodes:
        paths.update(make_node_keys(dest, nodes))
    return paths


def _check_credential_inputs(dest: Path, hosts: list[str], days: int, nodes: int) -> None:
    """`certs`' arguments, before anything is written: a DEST that is a file, an empty --host, --days below 1 were
    tracebacks from deep in `cryptography` (--days 0 wrote a certificate that had already expired), and a negative
    --nodes was refused only after the CA had been written."""
    in_the_way = file_in_the_way(dest)
    if in_the_way is not None:
        raise ConfigError(f"{dest}: {in_the_way} is a file, not a folder; give a folder for ca.crt, server.pem and "
                          "server.key")
    bad = next((h for h in hosts if not h.strip() or len(h) > 64), None)
    if bad is not None or not hosts:
        raise ConfigError(f"--host {bad!r}: a SuperLink's name or IP address, 1 to 64 characters (repeat --host for "
                          "each name it answers on)")
    if days < 1:
        raise ConfigError(f"--days {days}: the certificates' lifetime must be at least 1 day")
    if nodes < 0:
        raise ConfigError(f"--nodes {nodes}: the number of SuperNode key pairs cannot be negative (0: none)")


def make_node_keys(dest: Path, count: int) -> dict[str, Path]:
    """SuperNode authentication keys: node-I.key (private, OpenSSH) and node-I.pub per partition-id I.

    Flower 1.41 authenticates SuperNodes by an EC key pair on a NIST curve: the SuperLink
    (`--enable-supernode-auth`) accepts only nodes whose public key was registered with
    `flwr supernode register node-I.pub <connection>`; the device starts its SuperNode with
    `--auth-supernode-private-key node-I.key`. `supernodes.csv` lists partition-id -> public key file.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if count < 1:
        raise ConfigError(f"--nodes must be at least 1 (got {count})")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    taken = [p for i in range(count) for p in (dest / f"node-{i}.key", dest / f"node-{i}.pub") if p.exists()]
    if taken:
        raise ConfigError(f"{taken[0]} exists: keep the registered keys, or remove node-*.key/.pub in {dest} first")
    paths: dict[str, Path] = {}
    rows = ["partition-id,public-key"]
    for i in range(count):
        key = ec.generate_private_key(ec.SECP384R1())
        priv, pub = dest / f"node-{i}.key", dest / f"node-{i}.pub"
        priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
        priv.chmod(0o600)
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                      serialization.PublicFormat.OpenSSH) + b"\n")
        paths[f"node-{i}-key"], paths[f"node-{i}-pub"] = priv, pub
        rows.append(f"{i},{pub.name}")
    paths["nodes"] = dest / "supernodes.csv"
    paths["nodes"].write_text("\n".join(rows) + "\n")
    return paths


# -- the Flower App --------------------------------------------------------------------------------


def _absolute_paths(cfg: FederatedConfig) -> dict:
    """The run directory, and a model folder or data files named relative to here, made absolute: a deployed
    app's ServerApp and ClientApps run in other folders. Aliases and bundled task names stay as they are."""
    from edgeft.models.sources import SOURCES

    def here(value: str, kind: str) -> str:
        p = Path(value).expanduser()
        found = p.is_file() if kind == "file" else (p / "config.json").is_file() and value not in SOURCES
        return str(p.resolve()) if found else value

    options = dict(cfg.task_options)
    if options.get("dev_file"):
        options["dev_file"] = here(options["dev_file"], "file")
    return {"out": str(Path(cfg.out).resolve()), "model": here(cfg.model, "folder"), "task": here(cfg.task, "file"),
            "task_options": options}


def write_app(dest: Path, cfg: FederatedConfig) -> Path:
    """A Flower App folder: pyproject.toml pointing at edgeft's apps, run_config = this configuration."""
    import tomli_w

    dest = Path(dest)
    _check_app_folder(dest)
    dest.mkdir(parents=True, exist_ok=True)
    run_config = cfg.model_copy(update=_absolute_paths(cfg)).to_run_config()
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
    (dest / "README.md").write_text(APP_README)
    return dest


APP_README = "Flower App written by `edgeft federate ... app`; see docs/federated.md.\n"


def _check_app_folder(dest: Path) -> None:
    """A DEST that is a file was a FileExistsError traceback, and a folder's own pyproject.toml and README.md were
    replaced without a word; an app edgeft wrote there before is rewritten (a new configuration)."""
    in_the_way = file_in_the_way(dest)
    if in_the_way is not None:
        raise ConfigError(f"{dest}: {in_the_way} is a file, not a folder; give a folder for the Flower App")
    ours = {"pyproject.toml": 'name = "edgeft-federated"', "README.md": APP_README}
    theirs = [dest / n for n, mark in ours.items() if (dest / n).is_file() and mark not in (dest / n).read_text()]
    if theirs:
        raise ConfigError(f"{dest}: holds {', '.join(p.name for p in theirs)} that edgeft did not write, which the "
                          "Flower App would replace; give an empty or new folder")


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


# -- pre-flight check of a SuperNode's connection ----------------------------------------------------


def check_superlink(address: str, root_certificates: Optional[Path] = None, insecure: bool = False,
                    timeout: float = 5.0) -> Optional[str]:
    """What is wrong with connecting to the SuperLink at `address` this way, or None if the TLS handshake fits.

    Flower's SuperNode retries a failed connection forever with only "Connection attempt failed": a plaintext
    SuperNode against a TLS SuperLink (or the reverse, or the wrong CA) never says why. An unreachable
    SuperLink is not reported (a SuperNode may well start first)."""
    import ssl

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ConfigError(f"--superlink {address!r}: expected HOST:PORT, e.g. superlink.example.org:9093")
    if root_certificates is not None and not Path(root_certificates).is_file():
        return f"--root-certificates {root_certificates}: no such file (the CA certificate, ca.crt)"
    context = ssl.create_default_context(cafile=None if insecure else str(root_certificates) if root_certificates
                                         else None)
    if insecure:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError:
        return None
    try:
        with context.wrap_socket(raw, server_hostname=host):
            pass
    except ssl.SSLCertVerificationError as err:
        return (f"the SuperLink at {address} serves a certificate this SuperNode does not trust ({err.verify_message}):"
                f" pass --root-certificates with the CA certificate that signed it (ca.crt), and reach the SuperLink "
                "by a name or IP its certificate lists (edgeft federate certs --host ...)")
    except (ssl.SSLError, OSError) as err:
        if insecure:
            return None  # no TLS handshake possible: a plaintext SuperLink, as --insecure expects
        return (f"the SuperLink at {address} does not complete a TLS handshake ({err.__class__.__name__}): it was "
                "probably started with --insecure; start it with --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile, or "
                "this SuperNode with --insecure")
    finally:
        raw.close()
    if insecure:
        return (f"the SuperLink at {address} serves TLS but this SuperNode was started with --insecure, so it would "
                "retry forever: start it with --root-certificates ca.crt (the CA certificate from "
                "`edgeft federate certs`) instead of --insecure")
    return None


def run_supernode(args: list[str]) -> None:
    """Replace this process by flower-supernode with `args` once a TLS handshake shows that its --insecure /
    --root-certificates fit the SuperLink (Flower would retry a mismatch forever)."""
    import argparse

    from flwr.supercore.constant import SUPERLINK_DEFAULT_CLIENT_ADDRESS

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--superlink", default=SUPERLINK_DEFAULT_CLIENT_ADDRESS)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates", type=Path)
    known, _ = parser.parse_known_args(args)
    problem = check_superlink(known.superlink, known.root_certificates, known.insecure)
    if problem:
        raise ConfigError(f"flower-supernode would retry forever: {problem}")
    os.execv(_bin("flower-supernode"), [_bin("flower-supernode"), *args])


# -- processes -------------------------------------------------------------------------------------


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


class LocalFederation:
    """A SuperLink and `n` SuperNodes on 127.0.0.1 (separate processes, TLS), for tests and demos.

    With `auth` (the default with TLS) the SuperLink accepts only SuperNodes whose key was registered,
    as docs/federated.md deploys it; SuperNode i uses node-i.key and claims partition-id i.

    with LocalFederation(workdir, supernodes=2) as fed:
        fed.run(app_dir, timeout=300)
    """

    def __init__(self, workdir: Path, supernodes: int = 2, tls: bool = True, auth: Optional[bool] = None):
        if supernodes < 1:
            raise ConfigError("a federation needs at least one SuperNode")
        auth = tls if auth is None else auth
        if auth and not tls:
            raise ConfigError("SuperNode authentication needs TLS (Flower refuses --enable-supernode-auth without it)")
        self.workdir = Path(workdir).resolve()
        self.n, self.tls, self.auth = supernodes, tls, auth
        self.procs: dict[str, subprocess.Popen] = {}
        self.reaper: Optional[Reaper] = None  # stops the components should this process die without stop()
        self.logs: dict[str, Path] = {}
        self.flwr_home = self.workdir / "flwr-home"
        self.certs = self.workdir / "certs"
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
        handle = open(log, "ab")  # a restarted component appends to its log
        proc = subprocess.Popen(args, cwd=self.workdir, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        handle.close()
        self.procs[name] = proc
        if self.reaper is None:
            self.reaper = Reaper()
        self.reaper.watch(proc.pid)
        return proc

    def start(self, wait_s: float = 120.0) -> "LocalFederation":
        self.workdir.mkdir(parents=True, exist_ok=True)
        certs = make_certificates(self.certs, ["127.0.0.1", "localhost"]) if self.tls else None
        write_connection(self.flwr_home, self.address, certs["ca"] if certs else None)
        tls_args = (["--ssl-ca-certfile", str(certs["ca"]), "--ssl-certfile", str(certs["cert"]),
                     "--ssl-keyfile", str(certs["key"])] if certs else ["--insecure"])
        auth_args = ["--enable-supernode-auth"] if self.auth else []
        self._start("superlink", [_bin("flower-superlink"), *tls_args, *auth_args, "--host", "127.0.0.1", "--port",
                                  str(self.port), "--disable-runtime-dependency-installation"])
        self._wait_for_port(self.port, wait_s)
        if self.auth:
            make_node_keys(self.certs, self.n)
            self.register(*(self.certs / f"node-{i}.pub" for i in range(self.n)))
        for i in range(self.n):
            self.start_supernode(f"supernode-{i}", i, self.certs / f"node-{i}.key" if self.auth else None)
        for i in range(self.n):
            self.wait_for_log(f"supernode-{i}", "SuperNode ID", wait_s)
        return self

    def register(self, *public_keys: Path) -> None:
        """`flwr supernode register KEY edgeft-local` for each key, the CLIs side by side (each spends a second or
        two starting Python): the SuperLink will accept the nodes holding the private keys."""
        runs = {key: subprocess.Popen([_bin("flwr"), "supernode", "register", str(key), CONNECTION], env=self.env,
                                      cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for key in public_keys}
        failed = []
        for key, proc in runs.items():
            try:
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            if proc.returncode != 0:
                failed.append(f"registering {key} failed: {out[-1000:]}{err[-1000:]}")
        if failed:
            raise RuntimeError("\n".join(failed))

    def start_supernode(self, name: str, partition: int, key: Optional[Path] = None,
                        insecure: Optional[bool] = None) -> subprocess.Popen:
        """A SuperNode claiming `partition`; `key`: its authentication private key (node-I.key)."""
        insecure = not self.tls if insecure is None else insecure
        trust = ["--insecure"] if insecure else ["--root-certificates", str(self.certs / "ca.crt")]
        auth = ["--auth-supernode-private-key", str(key)] if key else []
        return self._start(name, [_bin("flower-supernode"), *trust, *auth, "--superlink", self.address,
                                  "--port", str(free_port()),
                                  "--node-config", f"partition-id={partition} num-partitions={self.n}"])

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
        send_signal(descendants(proc.pid) + [proc.pid], signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop every component; the SuperLink last, so the SuperNodes (stopped together) can sign off from it."""
        stop_trees([p for name, p in self.procs.items() if name != "superlink"])
        if "superlink" in self.procs:
            stop_tree(self.procs["superlink"])
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None

    def __enter__(self) -> "LocalFederation":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
