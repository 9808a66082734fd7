"""What one run asks of every worker process: one JSON file in the run directory.

The launcher writes it; each worker (started by `edgeft launch` locally or by `torchrun` on several
hosts) reads it, finds its own rank's role, and runs the strategy's part for that role.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Optional

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from edgeft.config import validate
from edgeft.errors import ConfigError
from edgeft.planner.strategies import get as strategy_entry
from edgeft.train.loop import TrainConfig


def _registered(name: str) -> str:
    strategy_entry(name, ValueError)
    return name


StrategyName = Annotated[str, AfterValidator(_registered)]  # a name in edgeft.planner.strategies


GRAD_SYNC_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # train.grad_sync: what the all-reduce sends


class RuntimeTrain(TrainConfig):
    """TrainConfig (same keys, defaults and checks) as every strategy uses it, plus the runtime's own knobs.
    The knobs only the single-device loop has are refused when changed, so none is silently ignored."""

    SINGLE_DEVICE_ONLY: ClassVar[dict[str, str]] = {
        "grad_accum": "use micro_batches (hybrid) or a smaller batch_size",
        "checkpoint_steps": "use checkpoint_every",
        "log_every": "the workers report every step",
        "device": "the launcher places each rank",
        "compile": "the strategies run their steps eager",
        "compile_bucket": "the strategies run their steps eager",
        "grad_checkpoint": "the strategies keep their blocks' activations",
        "deterministic": "the strategies' workers do not switch torch's deterministic kernels on",
    }

    micro_batches: Optional[int] = Field(None, ge=1, description="hybrid: micro-batches per step (None: the planner picks)")
    checkpoint_every: int = Field(5, ge=1, description="optimizer steps between checkpoints")
    max_steps_per_epoch: Optional[int] = Field(None, ge=1, description="cut epochs short (benchmarks)")
    local_steps: int = Field(1, ge=1, description="deft: optimizer steps per device per round")
    grad_sync: Literal["fp32", "bf16"] = Field(
        "bf16", description="dtype of the gradients in the data-parallel all-reduce (hybrid, split): bf16 sends half "
                            "the bytes over the devices' links, rounding each step's summed gradient to 8 bits of "
                            "mantissa (fp32 master weights and optimizer state are unchanged); fp32 sends them whole")

    @model_validator(mode="after")
    def _refuse_single_device_knobs(self):
        for key, instead in self.SINGLE_DEVICE_ONLY.items():
            if getattr(self, key) != TrainConfig.model_fields[key].default:
                raise ValueError(f"{key} is a knob of `edgeft finetune` only; edgeft launch cannot honour it "
                                 f"({instead})")
        return self


class RankSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["device", "server"] = "device"
    device_flops: Optional[float] = None
    slowdown: float = 1.0
    slowdown_clamped: bool = False
    memory_mb: Optional[float] = None
    up_bps: float = 0.0
    down_bps: float = 0.0
    latency_s: float = 0.0
    netns: Optional[str] = None


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: str
    strategy: StrategyName
    model: str
    head: str = "auto"
    task: dict
    method: str = "lora"
    method_options: dict = Field(default_factory=dict)
    train: RuntimeTrain = Field(default_factory=RuntimeTrain)
    ranks: list[RankSpec]
    layout: dict = Field(description="strategy-specific placement, see runtime/placement.py")
    link_mode: Literal["tc", "shaper", "none"] = "shaper"
    threads: int = 1
    timeout_s: float = 60.0
    heartbeat_s: float = 1.0
    attempt: int = 0
    resume: bool = False
    host_flops: Optional[float] = None
    evaluate: bool = True
    dev_samples_eval: Optional[int] = None

    @property
    def world(self) -> int:
        return len(self.ranks)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path | str) -> "RunSpec":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: run spec not found (the launcher writes it into the run directory).")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not a valid run spec (line {err.lineno}: {err.msg}).") from None
        return validate(cls, data, str(path), "run spec", "the launcher writes it; relaunch rather than edit it")
