"""Bad numbers in a cluster file stop with a ConfigError naming the file and the field, before any solver runs."""

import copy
import json
import math
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from edgeft.errors import ConfigError, EdgeftError
from edgeft.planner import Workload, load_cluster, make_plan, parse_cluster, resolve_arch

ROOT = Path(__file__).resolve().parents[2]
HOME = yaml.safe_load((ROOT / "examples" / "clusters" / "home-lab.yaml").read_text())
PHONES = yaml.safe_load((ROOT / "examples" / "clusters" / "four-phones.yaml").read_text())


def _write(tmp_path, data, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _with(base, path, value):
    data = copy.deepcopy(base)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize("base,path,value,named,says", [
    (HOME, ("devices", 0, "link"), {"channel_gain_db": math.nan}, "devices[0](phone-a).link.channel_gain_db", "finite"),
    (HOME, ("channel", "noise_dbm_per_hz"), math.nan, "channel.noise_dbm_per_hz", "finite"),
    (HOME, ("devices", 0, "link", "distance_m"), 1e-300, "devices[0](phone-a).link.distance_m", "physical range"),
    (HOME, ("devices", 1, "compute", "freq_ghz"), [0.5, 1e300], "devices[1](phone-b).compute.freq_ghz", "physical range"),
    (HOME, ("devices", 1, "compute", "freq_ghz"), math.inf, "devices[1](phone-b).compute.freq_ghz", "finite"),
    (HOME, ("servers", 0, "band_mhz"), 1e300, "servers[0](edge-gpu).band_mhz", "physical range"),
    (HOME, ("devices", 2, "link", "tx_power_w"), [0.05, math.inf], "devices[2](phone-c).link.tx_power_w", "finite"),
    (HOME, ("devices", 2, "link", "tx_power_w"), 1e300, "devices[2](phone-c).link.tx_power_w", "physical range"),
    (HOME, ("devices", 3, "compute", "cores"), True, "devices[3](jetson).compute.cores", "boolean"),
    (HOME, ("devices", 3, "samples"), 2.5, "devices[3](jetson).samples", "whole number"),
    (HOME, ("devices", 4, "memory_gb"), "lots", "devices[4](laptop).memory_gb", "not the text 'lots'"),
    (HOME, ("devices", 4, "energy", "power_w"), -3, "devices[4](laptop).energy.power_w", "greater than 0"),
    (HOME, ("devices", 4, "position_m"), [0, math.nan], "devices[4](laptop).position_m[1]", "finite"),
    (HOME, ("servers", 0, "energy", "kappa"), 10**400, "servers[0](edge-gpu).energy.kappa", "too large"),
    (PHONES, ("devices", 0, "link", "rate_mbps"), math.inf, "devices[0](phone-1).link.rate_mbps", "finite"),
    (PHONES, ("devices", 0, "link", "rate_mbps"), 1e308, "devices[0](phone-1).link.rate_mbps", "0.001..1e+06 Mbit/s"),
    (PHONES, ("devices", 0, "link", "rate_mbps"), 1e-300, "devices[0](phone-1).link.rate_mbps", "0.001..1e+06 Mbit/s"),
    (PHONES, ("devices", 1, "compute", "flops"), math.inf, "devices[1](phone-2).compute.flops", "finite"),
    (PHONES, ("devices", 1, "compute", "flops"), 1e30, "devices[1](phone-2).compute.flops", "1000..1e+18 FLOP/s"),
    (PHONES, ("devices", 2, "memory_gb"), True, "devices[2](phone-3).memory_gb", "not the boolean true"),
    (PHONES, ("devices", 2, "memory_gb"), 1e-9, "devices[2](phone-3).memory_gb", "0.001..10000 GB"),
    (PHONES, ("devices", 3, "link", "latency_ms"), -1, "devices[3](phone-4).link.latency_ms", "physical range"),
    (PHONES, ("servers", 0, "compute", "flops"), "fast", "servers[0](edge).compute.flops", "expected a number"),
], ids=lambda v: "" if isinstance(v, dict) and "devices" in v else str(v)[:24])
def test_bad_number_names_file_and_field(tmp_path, base, path, value, named, says):
    p = _write(tmp_path, _with(base, path, value))
    with pytest.raises(ConfigError) as err:
        load_cluster(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: {named}: ") and says in msg, msg  # one problem: file, field, what, one line


def test_numbers_as_yaml_writes_them_still_load(tmp_path):
    """PyYAML reads 1e10 (no dot) as text; it is still a number, and 8.0 is still a whole number of cores."""
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ndevices:\n  - {name: a, compute: {cores: 8.0, flops_per_cycle: 2, freq_ghz: [5e-1, 2]}, "
                 "memory_gb: 4, link: {distance_m: 1e2}}\nservers:\n  - {name: s, compute: {flops: 1e13}, "
                 "memory_gb: 80, band_mhz: 20}\n")
    spec = load_cluster(p)
    assert spec.devices[0].compute.cores == 8 and isinstance(spec.devices[0].compute.cores, int)
    assert spec.devices[0].compute.freq_range_hz() == (0.5e9, 2e9) and spec.servers[0].compute.rate() == 1e13
    assert spec.devices[0].link.distance_m == 100.0


def test_cycle_form_rate_outside_the_flops_range(tmp_path):
    data = _with(HOME, ("servers", 0, "compute"), {"cores": 10**6, "flops_per_cycle": 10**4, "freq_ghz": 50})
    with pytest.raises(ConfigError, match=r"servers\[0\]\(edge-gpu\)\.compute: cores x flops_per_cycle x freq_ghz = "
                                          r"5e\+20 FLOP/s is outside the physical range"):
        load_cluster(_write(tmp_path, data))


def test_derived_uplink_rate_below_1_kbit_is_named(tmp_path):
    data = _with(HOME, ("devices", 2, "link"), {"distance_m": 1e6, "tx_power_w": 1e-3})  # 1000 km at 1 mW
    with pytest.raises(ConfigError, match=r"devices\[2\]\(phone-c\)\.link: the uplink to server 'edge-gpu' works out "
                                          r"at .* bit/s, outside the physical range 1000\.\.1e\+12 bit/s"):
        load_cluster(_write(tmp_path, data))


def test_binary_file_is_named_not_a_unicode_traceback(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ConfigError, match=rf"{p}: not UTF-8 text"):
        load_cluster(p)


def test_control_characters_are_invalid_yaml_naming_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\x07\ndevices: []\n")
    with pytest.raises(ConfigError, match=rf"{p}:.* is not valid YAML"):
        load_cluster(p)


def test_split_on_a_rate_only_link_says_what_split_needs():
    spec = parse_cluster(_with(HOME, ("devices", 1, "link"), {"rate_mbps": 50}))
    with pytest.raises(EdgeftError) as err:
        make_plan(spec, resolve_arch("minilm-l6"), Workload(), "split")
    msg = str(err.value)
    assert "'phone-b' gives only link.rate_mbps" in msg and "split" in msg and "channel_gain_db or link.distance_m" in msg
    assert "has no link.rate_mbps" not in msg


def test_infeasible_baselines_are_null_in_plan_json():
    """Pipeline fits, data parallel and a single device do not: no Infinity (not JSON) in plan.json."""
    spec = parse_cluster(_with(PHONES, ("devices",), [{**d, "memory_gb": 1} for d in PHONES["devices"]]))
    plan = make_plan(spec, resolve_arch("smollm2-135m"), Workload(batch=8, seq_len=128, method="full"), "hybrid",
                     samples=64)
    assert math.isfinite(plan.predicted["time_s"])
    saved = json.loads(plan.to_json(), parse_constant=lambda c: pytest.fail(f"{c} in plan.json"))
    assert saved["baselines"] == {"data-parallel": None, "standalone (best device)": None}


def test_cli_plan_on_nan_gain_exits_with_the_field_and_writes_nothing(tmp_path):
    """Before: a hybrid plan with time_s NaN and exit 0."""
    from edgeft.cli.plan import register

    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    p = _write(tmp_path, _with(HOME, ("devices", 0, "link"), {"channel_gain_db": math.nan}))
    res = CliRunner().invoke(app, ["plan", "--cluster", str(p), "--model", "minilm-l6", "--strategy", "hybrid",
                                   "--out", str(tmp_path / "out"), "--no-plots"])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    assert "devices[0](phone-a).link.channel_gain_db: expected a finite number" in str(res.exception)
    assert not (tmp_path / "out" / "plan.json").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "clusters").glob("*.yaml"))
                         + sorted((ROOT / "bench" / "clusters_runtime").glob("*.yaml"))
                         + sorted((ROOT / "tests" / "runtime" / "clusters").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_cluster_is_within_the_ranges(path):
    spec = load_cluster(path)
    assert all(1e3 <= spec.full_band_rate(d) <= 1e12 for d in spec.devices if d.link.rate_mbps != 0)
