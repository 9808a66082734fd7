"""Cluster YAML validation: clear errors naming the file and field."""

from pathlib import Path

import pytest

from edgeft.errors import ConfigError, PlanError
from edgeft.planner import Workload, load_cluster, make_plan, parse_cluster, resolve_arch

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ROOT / "examples" / "clusters"

DEV = {"name": "a", "compute": {"flops": 1e10}, "memory_gb": 4, "link": {"rate_mbps": 50}}
SRV = {"name": "s", "compute": {"flops": 1e12}, "memory_gb": 80, "band_mhz": 20}


@pytest.mark.parametrize("name", ["home-lab.yaml", "classroom-deft.yaml", "mec-50x10.yaml"])
def test_examples_load(name):
    spec = load_cluster(CLUSTERS / name)
    assert spec.devices and spec.servers
    assert all(spec.full_band_rate(d) > 0 for d in spec.devices)


def _load_error(tmp_path, text: str) -> tuple:
    """(the cluster file written with `text`, the ConfigError message load_cluster gives for it)."""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_cluster(p)
    return p, str(err.value)


def test_unknown_key_names_file_and_field(tmp_path):
    p, msg = _load_error(tmp_path, "name: x\ndevices:\n  - name: a\n    compute: {flops: 1e10}\n    memory_gb: 4\n"
                         "    memroy: 3\nservers:\n  - {name: s, compute: {flops: 1e12}, memory_gb: 8, band_mhz: 20}\n")
    assert str(p) in msg and "devices[0](a).memroy" in msg and "unknown key" in msg


def test_malformed_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndevices: [\n")
    with pytest.raises(ConfigError, match="line"):
        load_cluster(p)


def test_compute_needs_one_form():
    with pytest.raises(ConfigError, match="either 'flops'"):
        parse_cluster({"name": "x", "devices": [{**DEV, "compute": {"cores": 4}}], "servers": [SRV]})


def test_a_name_yaml_reads_as_a_number_says_to_quote_it(tmp_path):
    """`name: 7` was refused with pydantic's bare 'Input should be a valid string'."""
    _, msg = _load_error(tmp_path, "name: x\ndevices:\n  - name: 7\n    compute: {flops: 1e10}\n    memory_gb: 4\n"
                         "servers:\n  - {name: yes, compute: {flops: 1e12}, memory_gb: 8, band_mhz: 20}\n")
    assert "devices[0](7).name: a name is text, and YAML read 7 as a number: put it in quotes (name: \"7\")" in msg
    assert "read True as true/false" in msg


def test_split_on_a_cluster_of_rates_points_at_one_it_can_plan():
    spec = parse_cluster({"name": "x", "devices": [DEV], "servers": [SRV]})
    with pytest.raises(PlanError, match="cycle form .*examples/clusters/home-lab.yaml is a cluster written that way"):
        make_plan(spec, resolve_arch("minilm-l6"), Workload(), "split")


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_cluster("/nonexistent/cluster.yaml")


def test_zero_bandwidth_is_a_clear_error():
    spec = parse_cluster({"name": "x", "devices": [DEV, {**DEV, "name": "b", "link": {"rate_mbps": 0}}], "servers": [SRV]})
    with pytest.raises(PlanError, match="zero uplink rate"):
        make_plan(spec, resolve_arch("minilm-l6"), Workload(), "deft")


def test_block_that_fits_no_device_is_a_clear_error():
    tiny = {**DEV, "memory_gb": 0.05}
    spec = parse_cluster({"name": "x", "devices": [tiny, {**tiny, "name": "b"}], "servers": [SRV]})
    with pytest.raises(PlanError, match="needs .* GiB but the largest device has"):
        make_plan(spec, resolve_arch("smollm2-135m"), Workload(method="full"), "deft")
    with pytest.raises(PlanError, match="no pipeline placement fits"):
        make_plan(spec, resolve_arch("smollm2-135m"), Workload(method="full"), "hybrid")


def test_unknown_model_and_strategy():
    with pytest.raises(ConfigError, match="unknown model"):
        resolve_arch("gpt-17")
    spec = parse_cluster({"name": "x", "devices": [DEV], "servers": [SRV]})
    with pytest.raises(PlanError, match="unknown strategy"):
        make_plan(spec, resolve_arch("minilm-l6"), Workload(), "magic")
