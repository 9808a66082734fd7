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


def predict_time(plan: Plan, device_flops: dict[str, float] | None = None, link_bps: dict[str, float] | None = None) -> float:
    """Re-times a plan with measured FLOP/s per device and/or measured uplink bit/s per device
    (missing entries keep the plan's own numbers). Returns seconds per plan.predicted['time_unit']."""
    device_flops = device_flops or {}
    link_bps = link_bps or {}

    def comp(t: DeviceTask) -> float:
        if t.device in device_flops and t.work_flops:
            return t.work_flops / device_flops[t.device]
        return t.compute_s

    def comm(t: DeviceTask) -> float:
        if t.device in link_bps and (t.send_bytes or t.recv_bytes):
            bps = link_bps[t.device] * max(t.bandwidth_share, 1e-12) if t.bandwidth_share else link_bps[t.device]
            return (t.send_bytes + t.recv_bytes) * 8 / bps
        return t.comm_s

    active = [t for t in plan.tasks if t.role != "idle"]
    if plan.strategy == "deft":
        return max(comp(t) + comm(t) for t in active) * plan.workload.get("rounds", 1)
    if plan.strategy == "split":
        return sum(comp(t) + comm(t) for t in active)  # the paper's delay is a sum over users
    if plan.strategy == "hybrid":
        from edgeft.planner.hybrid import simulate_1f1b

        fwd, bwd, cm = [], [], []
        for st in plan.stages:
            scale = max(comp(plan.task(d)) / plan.task(d).compute_s if plan.task(d).compute_s else 1.0
                        for d in st["devices"])
            fwd.append(st["fwd_s"] * scale)
            bwd.append(st["bwd_s"] * scale)
            cm.append(st["comm_s"])
        it_s, _ = simulate_1f1b(fwd, bwd, cm, plan.micro_batches)
        it_s += max(st["allreduce_s"] for st in plan.stages) + plan.predicted.get("step_fixed_s", 0.0)
        return it_s * plan.workload["iterations"]
    raise PlanError(f"unknown strategy {plan.strategy!r}")


def predict_epoch_time(plan: Plan, device_flops: dict[str, float] | None = None,
                       link_bps: dict[str, float] | None = None) -> float:
    """Alias kept for the runtime: seconds per epoch (hybrid) or per round (deft) with measured numbers."""
    return predict_time(plan, device_flops, link_bps)
