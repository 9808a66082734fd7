import subprocess
import sys
import tomllib

import pytest
from cryptography import x509

from edgeft.federated.config import FederatedConfig

EDGEFT = [sys.executable, "-m", "edgeft.cli"]


def run_cli(*args):
    return subprocess.run([*EDGEFT, *args], capture_output=True, text=True, timeout=300)


def test_bad_federated_options_are_clean_errors(tmp_path):
    proc = run_cli("federate", "--algorithm", "fedkseed", "--dp", "local", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "offered for fedit only" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("federate", "--algorithm", "fedsgd")
    assert proc.returncode == 2 and "algorithm" in proc.stderr and "fedkseed-pro" in proc.stderr


def test_app_command_writes_a_flower_app_carrying_the_configuration(tmp_path):
    proc = run_cli("federate", "--algorithm", "fedkseed-pro", "--clients", "5", "--rounds", "7", "--option", "r=4",
                   "--zo-base", "full", "--zo-params", "norm", "--zo-params", "lm_head",
                   "--out", str(tmp_path / "run"), "app", str(tmp_path / "app"))
    assert proc.returncode == 0, proc.stderr
    doc = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())
    app = doc["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "edgeft.federated.apps:server_app",
                                 "clientapp": "edgeft.federated.apps:client_app"}
    cfg = FederatedConfig.from_run_config(app["config"])
    assert (cfg.algorithm, cfg.clients, cfg.rounds, cfg.method_options) == ("fedkseed-pro", 5, 7, {"r": 4})
    assert (cfg.zo_base, cfg.zo_params) == ("full", ["norm", "lm_head"])
    assert cfg.out == str((tmp_path / "run").resolve())


def test_certs_command_makes_a_ca_and_a_server_certificate_it_signed(tmp_path):
    proc = run_cli("federate", "certs", str(tmp_path), "--host", "127.0.0.1", "--host", "edge.example.org")
    assert proc.returncode == 0, proc.stderr
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "edge.example.org" in names.get_values_for_type(x509.DNSName)
    assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0


def test_the_certificates_pass_a_strict_tls_check_as_python_3_13_makes_by_default(tmp_path):
    """Python 3.13's default TLS context sets VERIFY_X509_STRICT: without key identifiers the server certificate
    was refused ("Missing Authority Key Identifier"), so edgeft's own SuperLink check failed its own certificates
    and `edgeft federate supernode` would not start. A real handshake with the strict flag, on any Python."""
    import socket
    import ssl
    import threading

    from edgeft.federated.deploy import make_certificates

    paths = make_certificates(tmp_path, ["127.0.0.1"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths["cert"], paths["key"])
    client = ssl.create_default_context(cafile=str(paths["ca"]))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def accept():
            conn, _ = listener.accept()
            try:
                server.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

        serving = threading.Thread(target=accept, daemon=True)
        serving.start()
        with socket.create_connection(listener.getsockname(), timeout=30) as raw:
            with client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() is not None
        serving.join(timeout=30)


def test_certs_command_writes_supernode_key_pairs_flower_accepts(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    proc = run_cli("federate", "certs", str(tmp_path), "--nodes", "2")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "supernodes.csv").read_text().splitlines() == ["partition-id,public-key", "0,node-0.pub",
                                                                      "1,node-1.pub"]
    for i in range(2):
        key = serialization.load_ssh_private_key((tmp_path / f"node-{i}.key").read_bytes(), None)  # as flower-supernode
        assert (tmp_path / f"node-{i}.key").stat().st_mode & 0o077 == 0
        registered = try_load_public_key(tmp_path / f"node-{i}.pub")  # as `flwr supernode register` reads it
        assert registered == public_key_to_bytes(key.public_key()) and key.curve.name == "secp384r1"
    again = run_cli("federate", "certs", str(tmp_path / "more"), "--nodes", "0")
    assert again.returncode == 0 and not list((tmp_path / "more").glob("node-*"))


def test_an_impossible_partition_fails_before_ray_starts(tmp_path, tiny_llama):
    import time

    t0 = time.perf_counter()
    proc = run_cli("federate", "--algorithm", "fedit", "--model", str(tiny_llama), "--task", "sst2", "--clients", "50",
                   "--train-samples", "60", "--partition", "dirichlet", "--alpha", "0.01", "--rounds", "1",
                   "--out", str(tmp_path / "r"))
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2 and "could not give each of 50 clients" in proc.stderr, proc.stderr[-2000:]
    assert elapsed < 20, f"the partition error took {elapsed:.0f} s"
    assert "ray" not in (proc.stdout + proc.stderr).lower()


def test_your_own_file_federates_with_finetunes_data_options(tmp_path):
    """--data-file and the column options (finetune's) reach every party through the Flower app's run_config, and
    the clients' shards are the file's rows read with those columns."""
    import json

    from edgeft.federated.data import data_for

    data = tmp_path / "mail.jsonl"
    data.write_text("".join(json.dumps({"body": f"note {i}", "folder": "work" if i % 2 else "home"}) + "\n"
                            for i in range(40)))
    proc = run_cli("federate", "--algorithm", "fedit", "--model", "minilm-l6", "--data-file", str(data),
                   "--text-column", "body", "--label-column", "folder", "--clients", "4",
                   "--out", str(tmp_path / "run"), "app", str(tmp_path / "app"))
    assert proc.returncode == 0, proc.stderr
    cfg = FederatedConfig.from_run_config(tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())
                                          ["tool"]["flwr"]["app"]["config"])
    assert cfg.task == str(data) and cfg.task_options == {"text_column": "body", "label_column": "folder"}
    task, parts = data_for(cfg)
    assert task.label_names == ["home", "work"] and sum(len(p) for p in parts) == len(task.train) == 36
    # a column the file lacks stops the simulation before Ray starts, naming the file and the column
    proc = run_cli("federate", "--algorithm", "fedit", "--model", "minilm-l6", "--data-file", str(data),
                   "--text-column", "body", "--label-column", "fold", "--rounds", "1", "--out", str(tmp_path / "r2"))
    assert proc.returncode == 2 and str(data) in proc.stderr and "'fold'" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "ray" not in (proc.stdout + proc.stderr).lower()


def test_head_option_reaches_the_configuration(tmp_path):
    """The label-word error tells a user to pass --head classifier; federate takes it (as the config's head)."""
    proc = run_cli("federate", "--algorithm", "fedit", "--head", "classifier", "--out", str(tmp_path / "run"),
                   "app", str(tmp_path / "app"))
    assert proc.returncode == 0, proc.stderr
    app = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert FederatedConfig.from_run_config(app["config"]).head == "classifier"


def test_app_names_a_model_folder_and_data_files_given_relative_to_here_absolutely(tmp_path):
    """A deployed ServerApp and its ClientApps run in other folders: `--model tiny --data-file notes.jsonl`
    written as given pointed them at files that are not there. Aliases and bundled task names stay."""
    import json

    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text("{}")
    rows = "".join(json.dumps({"instruction": f"q {i}", "response": f"a {i}"}) + "\n" for i in range(8))
    (tmp_path / "notes.jsonl").write_text(rows)
    (tmp_path / "dev.jsonl").write_text(rows)
    proc = subprocess.run([*EDGEFT, "federate", "--algorithm", "fedit", "--model", "tiny", "--data-file",
                           "notes.jsonl", "--dev-file", "dev.jsonl", "--out", "run", "app", "app"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    app = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    cfg = FederatedConfig.from_run_config(app["config"])
    assert (cfg.model, cfg.task, cfg.task_options["dev_file"], cfg.out) == (
        str(tmp_path / "tiny"), str(tmp_path / "notes.jsonl"), str(tmp_path / "dev.jsonl"), str(tmp_path / "run"))
    proc = run_cli("federate", "--algorithm", "fedit", "--model", "smollm2-135m", "--task", "dolly",
                   "--out", str(tmp_path / "run2"), "app", str(tmp_path / "app2"))
    cfg = FederatedConfig.from_run_config(tomllib.loads((tmp_path / "app2" / "pyproject.toml").read_text())
                                          ["tool"]["flwr"]["app"]["config"])
    assert (cfg.model, cfg.task) == ("smollm2-135m", "dolly")


def test_a_stop_signal_ends_a_simulation_with_the_rounds_done_saved_and_no_stack_dump(tmp_path, tiny_llama):
    """SIGTERM to `edgeft federate` printed Ray's C++ stack dump and Flower's errors for the dying client actors,
    and left no metrics.json nor adapter (Ray's own handler exited at once); now the run stops as Ctrl-C stops it."""
    import json
    import signal
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([*EDGEFT, "federate", "--algorithm", "fedit", "--model", str(tiny_llama), "--task",
                             "dolly", "--train-samples", "80", "--eval-samples", "2", "--clients", "2", "--rounds",
                             "50", "--local-steps", "2", "--batch-size", "1", "--max-length", "32",
                             "--max-new-tokens", "2", "--threads", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = out / "events.jsonl"

    def a_round_ended() -> bool:
        text = events.read_text() if events.exists() else ""
        return '"round": 1,' in text and '"round_end"' in text

    deadline = time.monotonic() + 420  # a round takes ~10 s alone, minutes beside other tests on 2 cores
    while time.monotonic() < deadline and proc.poll() is None and not a_round_ended():
        time.sleep(0.5)
    if not a_round_ended():
        proc.kill()
        pytest.fail(f"no round ended before the stop was to be sent: {proc.communicate()[1][-3000:]}")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stdout[-2000:] + stderr[-3000:]
    assert "stopped by SIGTERM after" in stdout and "of 50 rounds" in stdout, stdout[-2000:]
    assert "SIGTERM received" not in stderr and "Traceback" not in stderr and "ERROR" not in stderr, stderr[-3000:]
    stopped = [json.loads(line) for line in events.read_text().splitlines() if '"stopped"' in line]
    assert len(stopped) == 1 and 1 <= stopped[0]["rounds_done"] < 50
    assert (out / "metrics.json").is_file() and (out / "adapter").is_dir()
