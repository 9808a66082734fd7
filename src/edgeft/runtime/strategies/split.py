"""`split`: devices run the embedding and the first `cut` blocks, the edge server the rest.

Each step the global batch is cut into one row slice per device; every device sends its slice's
hidden states at the cut up its link; the server stitches them back into the full batch, runs the
remaining blocks, the head and the loss, and returns each device its slice of the activation
gradient. Device-side trainables (LoRA in the first blocks) are all-reduced among the devices, so
the run is the single-device step on the same batch (SplitFed-style); the server steps its own.
"""

from __future__ import annotations

import math

import torch

from edgeft.errors import ConfigError
from edgeft.runtime import placement as launch_plan
from edgeft.runtime.strategies import common as C
from edgeft.runtime.strategies.loop import Strategy
from edgeft.train.objective import forward


def _partition(ctx, cut: int):
    model, view = ctx.model, ctx.backbone.view
    view = type(view)(model, ctx.backbone.arch.family)
    embed = view.embedding
    dev_ids = {id(p) for p in embed.parameters()} | {id(p) for b in view.blocks[:cut] for p in b.parameters()}
    srv_ids = {id(p) for b in view.blocks[cut:] for p in b.parameters()}
    srv_ids |= {id(p) for n, p in model.named_parameters() if id(p) not in dev_ids}
    both = [n for n, p in model.named_parameters() if p.requires_grad and id(p) in dev_ids and
            (id(p) in {id(q) for q in (view.head.parameters() if view.head is not None else [])})]
    if both:
        raise ConfigError(f"parameter '{both[0]}' is used on both sides of the cut (tied embeddings under full "
                          "fine-tuning): use lora or bitfit with split.")
    named = dict(model.named_parameters())
    dev = {n: p for n, p in named.items() if p.requires_grad and id(p) in dev_ids}
    srv = {n: p for n, p in named.items() if p.requires_grad and id(p) not in dev_ids}
    return view, dev, srv


class Split(Strategy):
    @staticmethod
    def make_plan(cluster, table, samples: int, steps: int, micro_batches: int | None, cut: int | None):
        return launch_plan.plan_split(cluster, table, steps, cut)

    repredict = staticmethod(launch_plan.repredict_split)

    @classmethod
    def device_rows(cls, cfg, cluster, table, samples: int, steps: int) -> tuple[int, int | None]:
        return max(1, math.ceil(cfg.train.batch_size / len(cluster.devices))), None  # one row slice per device

    def setup(self) -> None:
        ctx = self.ctx
        C.check_blockwise_method(ctx)
        lay = ctx.spec.layout
        self.server, self.devices, self.cut = lay["server"], list(lay["devices"]), int(lay["cut"])
        C.build(ctx)
        self.view, self.dev_params, srv_params = _partition(ctx, self.cut)
        if not 0 < self.cut < self.view.num_blocks:
            raise ConfigError(f"split cut {self.cut} must be between 1 and {self.view.num_blocks - 1}")
        self.is_server = ctx.rank == self.server
        self.named = mine = srv_params if self.is_server else self.dev_params
        for n, p in dict(ctx.model.named_parameters()).items():  # autograd stops where nothing trains
            if p.requires_grad and n not in mine:
                p.requires_grad_(False)
        from edgeft.runtime.group import new_groups

        (self.dev_pg,) = new_groups([self.devices])
        total = C.steps_per_epoch(ctx) * ctx.spec.train.epochs
        self.opt, self.sched = C.make_optimizer(ctx, list(mine.values()), total)
        self.objective, self.label_ids = ctx.featurizer.objective, ctx.featurizer.label_token_ids
        self.all_ranks = [self.server] + self.devices
        self.my_slot = self.devices.index(ctx.rank) if not self.is_server else -1
        self.shard = "server" if self.is_server else ("devices" if self.my_slot == 0 else None)
        # the dev metrics before training: every rank built the model alike, so the server's copy is the whole
        # untrained model (no upload needed yet); the others wait without a step's timeout
        self.before = C.evaluate_before(ctx, ctx.model) if ctx.spec.evaluate and self.is_server else None
        C.wait_for_evaluation(ctx)

    def step(self, epoch: int, indices: list[int], global_step: int) -> float | None:
        ctx, view, cut, devices, opt = self.ctx, self.view, self.cut, self.devices, self.opt
        batch = C.to_device(ctx.featurizer.collate([ctx.train_feats[i] for i in indices]), ctx.group.device)
        rows = C.split_rows(len(indices), len(devices))
        if self.is_server:
            got = ctx.comm.recv_all(devices)  # the devices' uploads share the band at once
            parts = [got[d]["hidden"] for d in devices]
            with ctx.emu.compute():
                hidden = torch.cat(parts).requires_grad_(True)
                loss, _, _ = forward(C.HiddenModel(view, cut, hidden), batch, self.objective, self.label_ids)
                C.backward(ctx, loss)
            for d, (lo, hi) in zip(devices, rows):
                ctx.comm.send({"grad": hidden.grad[lo:hi]}, d)
            if C.clip_global(ctx, list(self.named.values()), self.all_ranks):
                opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())
        lo, hi = rows[self.my_slot]
        part = C.slice_rows(batch, lo, hi)
        with ctx.emu.compute():
            h = view.embed(part["input_ids"], part["attention_mask"], part.get("token_type_ids"))
            h = view.run_blocks(h, 0, cut, part["attention_mask"])
        ctx.comm.send({"hidden": h}, self.server)
        grad = ctx.comm.recv(self.server)["grad"]
        with ctx.emu.compute():
            if h.requires_grad:
                h.backward(grad)
        params = list(self.named.values())
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        C.sync_gradients(ctx, [p.grad for p in params], devices, self.dev_pg)
        if C.clip_global(ctx, params, self.all_ranks, share=1.0 / len(devices)):  # replicas count once
            opt.step()
        opt.zero_grad(set_to_none=True)
        return None

    def epoch_end(self, epoch: int) -> dict | None:
        if not self.ctx.spec.evaluate:
            return None
        return C.evaluate_full(self.ctx, self.ctx.model) if self._assemble() else None

    def _assemble(self) -> bool:
        """The first device uploads its side's trainables (the devices' copies are averaged, so alike); True on
        the server, which then holds the whole trained model."""
        ctx = self.ctx
        if ctx.rank == self.devices[0]:
            ctx.comm.send({n: p.detach() for n, p in self.dev_params.items()}, self.server)
            ctx.comm.flush()
            return False
        if ctx.rank == self.server:
            got = ctx.comm.recv(self.devices[0])
            named = dict(ctx.model.named_parameters())
            with torch.no_grad():
                for n, t in got.items():
                    named[n].copy_(t)
            return True
        return False

    def finish(self, res) -> dict:
        if self._assemble():
            C.save_adapter(self.ctx, self.ctx.model)
        return {"role": "server" if self.is_server else "device",
                "blocks": [self.cut, self.view.num_blocks] if self.is_server else [0, self.cut], "loop": res}


