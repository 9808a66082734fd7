"""Cluster spec: devices and edge servers as a validated YAML file.

Every number a solver uses comes from here (or from a measured profile), so a wrong key or an
impossible value must stop the run with the file and the field named, not deep inside a solver.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

from edgeft.config import field_path, format_problems, read_yaml, validate
from edgeft.errors import ConfigError
from edgeft.planner.quantity import quantity, quantity_range

Range = Union[float, tuple[float, float]]

# Physical ranges (docs/planner.md, "Cluster file"): generous, but no real device lies outside them.
RANGES = {  # field: (low, high, unit)
    "flops": (1e3, 1e18, "FLOP/s"),  # also cores x flops_per_cycle x freq_ghz
    "cores": (1, 1e7, "cores"),
    "flops_per_cycle": (1e-3, 1e4, "FLOPs/cycle"),
    "freq_ghz": (1e-3, 100.0, "GHz"),
    "memory_gb": (1e-3, 1e4, "GB"),  # 1 MB .. 10 TB
    "rate_mbps": (1e-3, 1e6, "Mbit/s"),  # 1 kbit/s .. 1 Tbit/s, or 0 (no uplink)
    "channel_gain_db": (-250.0, 30.0, "dB"),
    "distance_m": (0.1, 1e6, "m"),
    "position_m": (-1e7, 1e7, "m"),
    "tx_power_w": (1e-6, 100.0, "W"),  # a [min, max] range may start at 0
    "latency_ms": (0.0, 1e5, "ms"),
    "kappa": (1e-35, 1e-12, "J/cycle/Hz^2"),
    "power_w": (1e-3, 1e5, "W"),
    "band_mhz": (1e-3, 1e4, "MHz"),  # 1 kHz .. 10 GHz
    "samples": (1, 1e9, "samples"),
    "seq_len": (1, 1e7, "tokens"),
    "pathloss_const_db": (0.0, 300.0, "dB"),
    "pathloss_slope_db": (0.0, 100.0, "dB/decade"),
    "noise_dbm_per_hz": (-200.0, -100.0, "dBm/Hz"),
}
RATE_BPS_RANGE = (1e3, 1e12)  # uplink bit/s derived from the channel, as rate_mbps


def _q(name: str, **kw):
    return quantity(*RANGES[name], **kw)


Flops, Cores, FlopsPerCycle = _q("flops"), _q("cores", integer=True), _q("flops_per_cycle")
FreqGHz = quantity_range(*RANGES["freq_ghz"])
MemoryGB, RateMbps, GainDB = _q("memory_gb"), _q("rate_mbps", zero=True), _q("channel_gain_db")
DistanceM, Position, LatencyMs = _q("distance_m"), _q("position_m"), _q("latency_ms")
PowerTxW = quantity_range(*RANGES["tx_power_w"], zero_min=True)
Kappa, PowerW, BandMHz = _q("kappa"), _q("power_w"), _q("band_mhz")
Samples, SeqLen = _q("samples", integer=True), _q("seq_len", integer=True)
LossDB, SlopeDB, NoiseDBmHz = _q("pathloss_const_db"), _q("pathloss_slope_db"), _q("noise_dbm_per_hz")


def _lo_hi(value: Range) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    lo, hi = value
    return float(lo), float(hi)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComputeSpec(_Strict):
    """Compute rate: sustained FLOP/s, or cores x FLOPs/cycle x frequency (the split paper's C, D, f)."""

    flops: Optional[Flops] = Field(None, description="sustained FLOP/s")
    cores: Optional[Cores] = Field(None, description="D: parallel units (CPU cores, GPU cores)")
    flops_per_cycle: Optional[FlopsPerCycle] = Field(None, description="C: FLOPs per cycle per unit")
    freq_ghz: Optional[FreqGHz] = Field(None, description="clock, or [min, max] when the solver may set it")

    @model_validator(mode="after")
    def _one_form(self):
        cyc = (self.cores, self.flops_per_cycle, self.freq_ghz)
        if self.flops is None and any(x is None for x in cyc):
            raise ValueError("give either 'flops' or all of 'cores', 'flops_per_cycle', 'freq_ghz'")
        if self.flops is not None and any(x is not None for x in cyc):
            raise ValueError("give either 'flops' or the cores/flops_per_cycle/freq_ghz form, not both")
        lo, hi, _ = RANGES["flops"]
        for f in self.freq_range_hz():
            if not lo <= self.rate(f) <= hi:
                raise ValueError(f"cores x flops_per_cycle x freq_ghz = {self.rate(f):g} FLOP/s is outside the "
                                 f"physical range {lo:g}..{hi:g} FLOP/s")
        return self

    @property
    def units(self) -> float:
        """C*D: FLOPs per cycle of the whole device (1 when only 'flops' is given: then f is in FLOP/s)."""
        return float(self.cores * self.flops_per_cycle) if self.flops is None else 1.0

    def freq_range_hz(self) -> tuple[float, float]:
        if self.flops is not None:
            return self.flops, self.flops
        lo, hi = _lo_hi(self.freq_ghz)
        return lo * 1e9, hi * 1e9

    def rate(self, freq_hz: float | None = None) -> float:
        """FLOP/s at the given clock (default: the maximum)."""
        if freq_hz is None:
            freq_hz = self.freq_range_hz()[1]
        return self.units * freq_hz if self.flops is None else self.flops


class LinkSpec(_Strict):
    """Uplink to the edge server: a measured full-band rate, or a channel (gain or distance) and power."""

    rate_mbps: Optional[RateMbps] = Field(None, description="rate with the whole band to itself")
    channel_gain_db: Optional[GainDB] = Field(None, description="path gain (negative dB)")
    distance_m: Optional[DistanceM] = Field(None, description="distance to the server for the path-loss model")
    tx_power_w: PowerTxW = Field(0.2, description="transmit power, or [min, max]")
    latency_ms: LatencyMs = 0.0

    @model_validator(mode="after")
    def _one_form(self):
        given = [x is not None for x in (self.rate_mbps, self.channel_gain_db, self.distance_m)]
        if sum(given) > 1:
            raise ValueError("give only one of 'rate_mbps', 'channel_gain_db', 'distance_m'")
        return self

    def power_range(self) -> tuple[float, float]:
        return _lo_hi(self.tx_power_w)


def _text_name(value):
    """YAML reads `name: 7` as a number and `name: yes` as a bool; pydantic's 'a valid string' does not say why."""
    if not isinstance(value, str):
        kind = "true/false" if isinstance(value, bool) else "a number" if isinstance(value, (int, float)) else "no text"
        raise ValueError(f"a name is text, and YAML read {value!r} as {kind}: put it in quotes (name: \"{value}\")")
    if not value.strip():
        raise ValueError("a name cannot be empty: plans, tables and the runtime's ranks are keyed by it")
    return value


Name = Annotated[str, BeforeValidator(_text_name)]


class EnergySpec(_Strict):
    """Compute energy: kappa*f^2 per clock cycle of the whole device, i.e. kappa*f^3 watts at clock f (cycle form),
    or an active power in watts."""

    kappa: Optional[Kappa] = Field(None, description="effective switched capacitance (J/cycle/Hz^2)")
    power_w: PowerW = Field(5.0, description="active power when no kappa is given")


class DeviceSpec(_Strict):
    name: Name
    kind: str = "device"
    compute: ComputeSpec
    memory_gb: MemoryGB
    link: LinkSpec = Field(default_factory=LinkSpec)
    energy: EnergySpec = Field(default_factory=EnergySpec)
    position_m: Optional[tuple[Position, Position]] = None
    samples: Samples = Field(1000, description="local training samples (k_n in the stability bound)")
    seq_len: Optional[SeqLen] = Field(None, description="this device's sequence length (d_n), if not the run's")


class ServerSpec(_Strict):
    name: Name
    compute: ComputeSpec
    memory_gb: MemoryGB
    band_mhz: BandMHz = Field(description="uplink band shared by its devices")
    energy: EnergySpec = Field(default_factory=EnergySpec)
    position_m: Optional[tuple[Position, Position]] = None


class ChannelSpec(_Strict):
    """Path loss PL(dB) = const + slope*log10(d_km) and noise density (defaults: 3GPP-style, the split paper)."""

    pathloss_const_db: LossDB = 128.1
    pathloss_slope_db: SlopeDB = 37.6
    noise_dbm_per_hz: NoiseDBmHz = -174.0


class ClusterSpec(_Strict):
    name: Name
    description: str = ""
    devices: list[DeviceSpec] = Field(min_length=1)
    servers: list[ServerSpec] = Field(min_length=1)
    channel: ChannelSpec = Field(default_factory=ChannelSpec)
    _source: str | None = PrivateAttr(default=None)  # the file it was read from, for messages

    @property
    def where(self) -> str:
        """How planning errors name the cluster: its file when it came from one (as validation errors do), else
        its name."""
        return self._source or f"cluster {self.name}"

    @model_validator(mode="after")
    def _unique(self):
        names = [d.name for d in self.devices] + [s.name for s in self.servers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"names must be unique; repeated: {dup}")
        return self

    # ---- derived link numbers -------------------------------------------------------------------
    def noise_w_per_hz(self) -> float:
        return 10 ** ((self.channel.noise_dbm_per_hz - 30) / 10)

    def gain(self, device: DeviceSpec, server: ServerSpec) -> float:
        """Linear channel power gain device->server."""
        link = device.link
        if link.channel_gain_db is not None:
            return 10 ** (link.channel_gain_db / 10)
        if link.distance_m is not None:
            dist = link.distance_m
        elif device.position_m is not None and server.position_m is not None:
            dist = max(math.dist(device.position_m, server.position_m), 1.0)
        elif link.rate_mbps is not None:  # only the split strategy asks a rate_mbps link for its channel
            raise ConfigError(
                f"{self.where}: device {device.name!r} gives only link.rate_mbps, a fixed rate, but this "
                f"strategy (split) chooses each device's bandwidth and transmit power, so it needs the channel to "
                f"server {server.name!r}: give link.channel_gain_db or link.distance_m instead of rate_mbps, "
                "or position_m for the device and the server"
            )
        else:
            raise ConfigError(
                f"{self.where}: device {device.name!r} has no link.rate_mbps, link.channel_gain_db, "
                f"link.distance_m, nor positions for it and server {server.name!r}: give one of them"
            )
        pl_db = self.channel.pathloss_const_db + self.channel.pathloss_slope_db * math.log10(dist / 1000.0)
        return 10 ** (-pl_db / 10)

    def full_band_rate(self, device: DeviceSpec, server: ServerSpec | None = None) -> float:
        """Uplink bit/s the device gets with the server's whole band at maximum power (W log2(1 + g p / N0 W))."""
        server = server or self.servers[0]
        if device.link.rate_mbps is not None:
            return device.link.rate_mbps * 1e6
        band = server.band_mhz * 1e6
        p = device.link.power_range()[1]
        snr = self.gain(device, server) * p / (self.noise_w_per_hz() * band)
        return band * math.log2(1 + snr)


def _derived_rate_problems(spec: ClusterSpec, data: dict) -> list[str]:
    """Uplinks whose rate, derived from distance/gain, power, band and noise, no real link has."""
    lo, hi = RATE_BPS_RANGE
    problems = []
    for i, device in enumerate(spec.devices):
        if device.link.rate_mbps is not None:
            continue  # given directly, range-checked as a field
        for server in spec.servers:
            try:
                rate = spec.full_band_rate(device, server)
            except ConfigError:
                continue  # no channel to this server at all: the strategy that needs one says so
            if not lo <= rate <= hi:
                problems.append(
                    f"{field_path(('devices', i, 'link'), data)}: the uplink to server {server.name!r} works out "
                    f"at {rate:g} bit/s, outside the physical range {lo:g}..{hi:g} bit/s; check its distance_m, "
                    "channel_gain_db or position_m, tx_power_w, the server's band_mhz and the channel's "
                    "pathloss_const_db, pathloss_slope_db and noise_dbm_per_hz"
                )
    return problems


def parse_cluster(data: object, source: str = "<cluster>") -> ClusterSpec:
    """Validates a parsed YAML mapping; errors name the source and the field path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a cluster file must be a mapping with 'name', 'devices' and 'servers'")
    spec = validate(ClusterSpec, data, source, "cluster spec", "see docs/planner.md for the keys")
    problems = _derived_rate_problems(spec, data)
    if problems:
        raise ConfigError(format_problems(source, problems, "cluster spec"))
    if source != "<cluster>":
        spec._source = source
    return spec


def load_cluster(path: str | Path) -> ClusterSpec:
    data = read_yaml(path, "cluster file", "examples are in examples/clusters/")
    return parse_cluster(data, str(path))
