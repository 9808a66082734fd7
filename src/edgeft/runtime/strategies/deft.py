"""`deft` (LoLa DEFT): each device trains the blocks the plan gives it; the edge server aggregates.

Every round, all devices run the forward pass of the whole model on the round's batch and a
backward that stops at their own block (nothing below it trains, so autograd stops there: the
deeper the block, the more it costs, which is what CRUNCH exploits). Each device takes its local
optimizer step(s) on its block and uploads the new values over its link (its bandwidth share from
the plan shapes that uplink); the server writes them into the global model and sends all trainables
back to every device over its downlink (same share), the round's last transfer. Blocks are
disjoint, so with one local step the round equals one single-device step on the same batch (the
global gradient norm for clipping is all-reduced as one scalar).
Trainables outside the blocks go with the end block they touch: embeddings with the first block,
the final norm and head with the last.
"""

from __future__ import annotations

import time

import torch

from edgeft.errors import ConfigError
from edgeft.runtime.group import new_groups
from edgeft.runtime import placement as launch_plan
from edgeft.runtime.strategies import common as C
from edgeft.runtime.strategies.loop import Strategy
from edgeft.train.objective import forward


def ownership(model, view, blocks: dict[int, tuple[int, int]]) -> dict[int, list[str]]:
    """rank -> names of the trainable parameters it updates."""
    out = {r: C.block_param_names(model, view, s, e) for r, (s, e) in blocks.items()}
    first = min(blocks, key=lambda r: blocks[r][0])
    last = max(blocks, key=lambda r: blocks[r][1])
    embed = view.embedding
    embed_ids = {id(p) for p in embed.parameters()}
    named = dict(model.named_parameters())
    for n in C.outside_block_names(model, view):
        out[first if id(named[n]) in embed_ids else last].append(n)
    covered = sorted(x for r in blocks for x in range(*blocks[r]))
    if covered != list(range(view.num_blocks)):
        raise ConfigError(f"deft layout covers blocks {covered}, not each of 0..{view.num_blocks - 1} exactly once")
    return out


class Deft(Strategy):
    @staticmethod
    def make_plan(cluster, table, samples: int, steps: int, micro_batches: int | None, cut: int | None):
        return launch_plan.plan_deft(cluster, table, steps)

    repredict = staticmethod(launch_plan.repredict_deft)

    def setup(self) -> None:
        ctx = self.ctx
        C.check_blockwise_method(ctx)
        lay = ctx.spec.layout
        self.server, self.devices = lay["server"], list(lay["devices"])
        self.blocks = {int(r): tuple(b) for r, b in lay["blocks"].items()}
        C.build(ctx)
        model = self.model = ctx.model
        view = type(ctx.backbone.view)(model, ctx.backbone.arch.family)
        owners = ownership(model, view, self.blocks)
        named = self.all_named = dict(model.named_parameters())
        self.all_train = [n for n, p in named.items() if p.requires_grad]
        self.is_server = ctx.rank == self.server
        self.mine = {n: named[n] for n in owners.get(ctx.rank, [])}
        if not self.is_server:
            for n in self.all_train:
                if n not in self.mine:
                    named[n].requires_grad_(False)  # autograd stops below this device's block
        (self.dev_pg,) = new_groups([self.devices])
        total = C.steps_per_epoch(ctx) * ctx.spec.train.epochs
        if not self.is_server:
            self.opt, self.sched = C.make_optimizer(ctx, list(self.mine.values()), total)
        self.objective, self.label_ids = ctx.featurizer.objective, ctx.featurizer.label_token_ids
        # the server checkpoints the global model, each device its optimizer state
        self.named = {n: named[n] for n in self.all_train} if self.is_server else self.mine
        self.shard = "global" if self.is_server else f"opt-{ctx.name}"
        # the dev metrics before training (hybrid had them; deft printed only the after): the server holds the
        # whole model, as every rank built it alike; the others wait without a step's timeout
        self.before = C.evaluate_before(ctx, model) if ctx.spec.evaluate and self.is_server else None
        C.wait_for_evaluation(ctx)

    def step(self, epoch: int, indices: list[int], global_step: int) -> float | None:
        ctx, named, devices = self.ctx, self.all_named, self.devices
        batch = C.to_device(ctx.featurizer.collate([ctx.train_feats[i] for i in indices]), ctx.group.device)
        loss_v = torch.zeros(1, device=ctx.group.device)
        if self.is_server:
            for got in ctx.comm.recv_all(devices).values():  # the uploads share the band at once
                loss_v = got.pop("__loss__")
                with torch.no_grad():
                    for n, t in got.items():
                        named[n].copy_(t)
            received = time.time()
        else:
            t = [time.perf_counter()]
            for _ in range(ctx.spec.train.local_steps):
                with ctx.emu.compute():
                    loss, _, _ = forward(self.model, batch, self.objective, self.label_ids)
                    C.backward(ctx, loss)
                t.append(time.perf_counter())
                if C.clip_global(ctx, list(self.mine.values()), devices, self.dev_pg):
                    self.opt.step()
                self.opt.zero_grad(set_to_none=True)
            t.append(time.perf_counter())
            ctx.comm.send({**{n: p.detach() for n, p in self.mine.items()},
                           "__loss__": loss.detach().reshape(1)}, self.server)
        ctx.comm.star_broadcast_([named[n].data for n in self.all_train], self.server, devices)
        if self.is_server:  # where a round went: the uploads are in at `received`; devices log the rest
            ctx.log("round", step=global_step, received=received)
        else:
            ctx.log("round", step=global_step, compute_s=t[-2] - t[0], sync_s=t[-1] - t[-2],
                    link_s=time.perf_counter() - t[-1])
        return float(loss_v) if self.is_server else None

    def epoch_end(self, epoch: int) -> dict | None:
        return C.evaluate_full(self.ctx, self.model) if self.ctx.spec.evaluate and self.is_server else None

    def finish(self, res) -> dict:
        if self.is_server:  # the server steps every trainable and broadcasts them: it holds the result
            C.save_adapter(self.ctx, self.model)
        return {"role": "server" if self.is_server else "device", "blocks": list(self.blocks.get(self.ctx.rank, ())),
                "trains": len(self.mine), "loop": res}
