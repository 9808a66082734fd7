"""The Plan: what a runtime executes and what it compares its measurements against.

Work is stored in FLOPs and bytes (not only seconds), so `predict_time` can re-time a plan with the
runtime's measured device speeds and link rates.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeft.errors import PlanError

PLAN_VERSION = 1


@dataclass
class DeviceTask:
    device: str
    role: str  # 'block-trainer' | 'stage' | 'split-user' | 'idle'
    layers: list[int] | None = None  # [start, end) of transformer layers this device runs / trains
    stage: int | None = None
    server: str | None = None
    bandwidth_share: float = 0.0
    rate_bps: float = 0.0  # uplink rate under this plan
    data_share: float = 1.0  # fraction of each (micro-)batch (data parallel inside a stage)
    freq_ghz: float | None = None
    tx_power_w: float | None = None
    split_layer: int | None = None  # split: alpha, the device trains layers [0, alpha)
    work_flops: float = 0.0  # per round / per iteration, this device
    send_bytes: float = 0.0  # per round / per iteration
    recv_bytes: float = 0.0  # per round over the same shaped link (deft: the server's broadcast)
    compute_s: float = 0.0
    comm_s: float = 0.0
    memory_bytes: float = 0.0
    energy_j: float | None = None


@dataclass
class Plan:
    strategy: str  # 'deft' | 'split' | 'hybrid'
    model: str
    method: str
    cluster: str
    workload: dict
    tasks: list[DeviceTask]
    predicted: dict  # time_s, time_unit ('round' | 'epoch' | 'step'), energy_j, memory per device...
    stages: list[dict] = field(default_factory=list)  # hybrid: layers, devices, shares, fwd/bwd/comm seconds
    micro_batches: int = 1
    baselines: dict = field(default_factory=dict)  # name -> predicted time (or objective)
    solver: dict = field(default_factory=dict)
    timeline: list[dict] = field(default_factory=list)
    version: int = PLAN_VERSION

    def task(self, device: str) -> DeviceTask:
        for t in self.tasks:
            if t.device == device:
                return t
        raise PlanError(f"plan has no device {device!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, default=float)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        if data.get("version") != PLAN_VERSION:
            raise PlanError(f"plan version {data.get('version')!r} is not {PLAN_VERSION}: re-run `edgeft plan`")
        data = dict(data)
        data["tasks"] = [DeviceTask(**t) for t in data["tasks"]]
        try:
            return cls(**data)
        except TypeError as err:
            raise PlanError(f"malformed plan: {err}") from None

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Plan":
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise PlanError(f"plan file {path} not found")
            text = path.read_text()
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise PlanError(f"plan is not valid JSON ({err})") from None
