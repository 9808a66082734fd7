"""`hybrid` (PAC): a 1F1B pipeline over stages of contiguous blocks, data parallel inside each stage.

Each optimizer step splits the global batch into M micro-batches; stage s's devices split every
micro-batch by their shares (rows), so all devices of a stage follow the same 1F1B schedule
(warm-up forwards, one-forward-one-backward, cool-down backwards) and sends are asynchronous, so the
schedule cannot deadlock. Between stages a slice goes from each sender to each receiver whose rows
overlap it.

- method pac: the frozen backbone runs without autograd; each stage adds its taps' part of the
  parallel adapters' combined feature and passes (hidden, partial) on; only the partial carries a
  gradient back. Every device keeps the taps it computed, and at the end of the pipeline epoch they
  are exchanged so that each device holds its share of the activation cache (whole samples, owner
  by weighted rendezvous hashing, so a lost device only moves its own samples). Later epochs are
  pure data parallel over the adapters on the cache: no backbone, an all-reduce of the adapter
  gradients per step.
  With tap_norm=channel (PAC's default) the pipeline first runs forward only over the training set
  (`fill`): no adapter trains while the cache fills, the taps are exchanged, every owner measures its
  samples' channel moments and one all-reduce merges them (the single-device statistics, from the same
  first norm_samples samples); then every epoch trains on the cache, as `edgeft finetune` does with
  fill=stream. With tap_norm=token the pipeline epoch trains while it fills, as before.
- lora / full / bitfit: the same pipeline with the backward through the blocks, every epoch.

Gradients of all trainables are summed over all ranks after each step (each rank's are non-zero
only for what it touched), so every rank holds the whole, identical set of trainables: a step is
the single-device step on the same batch, and a checkpoint is any rank's copy.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from edgeft.methods.pac.taps import select
from edgeft.planner.hybrid_pricing import whole_rows
from edgeft.runtime import placement as launch_plan
from edgeft.runtime.placement import owner_of
from edgeft.runtime.strategies import common as C
from edgeft.runtime.strategies import pac_bridge as P
from edgeft.runtime.strategies.loop import Strategy
from edgeft.train.batches import epoch_batches
from edgeft.train.objective import forward


def share_rows(n: int, shares: list[float]) -> list[tuple[int, int]]:
    """Split n rows by shares, contiguous, in replica order; the sizes are the planner's whole_rows
    (largest remainder), so the rows a plan counts per device are the rows each one gets."""
    out, start = [], 0
    for s in whole_rows(n, shares).astype(int).tolist():
        out.append((start, start + s))
        start += s
    return out


class LogitsModel:
    """Model-like callable for objective.forward on the last stage's output: `head(hidden)` gives logits.
    A per-token head (the LM head) runs on the positions the objective keeps only (`logits_to_keep`,
    as PacModel.forward does): the label-word objective reads one position, and the vocabulary
    projection of every position was a third of a SmolLM2 step's work, thrown away. Of that position the LM
    head computes the label words' logits only (`vocab_ids`, BlockView.final)."""

    accepts_sample_ids = False
    accepts_vocab_ids = True

    def __init__(self, head, hidden, per_token: bool):
        self.head, self.hidden, self.per_token = head, hidden, per_token

    def __call__(self, logits_to_keep=None, vocab_ids=None, **_):
        h = self.hidden
        if not self.per_token:  # a task head: its logits are the labels already
            return SimpleNamespace(logits=self.head(h))
        if logits_to_keep:
            h = h[:, -int(logits_to_keep):]
        return SimpleNamespace(logits=self.head(h) if vocab_ids is None else self.head(h, vocab_ids=vocab_ids))


class Hybrid(Strategy):
    @staticmethod
    def make_plan(cluster, table, samples: int, steps: int, micro_batches: int | None, cut: int | None):
        return launch_plan.plan_hybrid(cluster, table, samples, steps, micro_batches)

    # repredict: None. Hybrid has no server, and time_scale=auto keeps its devices slower than the host,
    # so the emulated cluster is the planned one.

    @classmethod
    def device_rows(cls, cfg, cluster, table, samples: int, steps: int) -> tuple[int, int | None]:
        """A device's share of a micro-batch, as the planner will pick them (on the undilated cluster:
        dilation scales every time alike, so it picks the same micro-batches and shares)."""
        B = cfg.train.batch_size
        p = cls.make_plan(cluster, table, samples, steps, cfg.train.micro_batches, None)
        share = max(x for st in p.layout["stages"] for x in st["shares"])
        rows = max(1, round(math.ceil(B / p.layout["micro_batches"]) * share))
        cached = p.planner.get("cached_shares")
        from edgeft.methods import get_method

        if not cached or not get_method(cfg.method, cfg.method_options).uses_cache():
            return rows, None
        return rows, max(1, round(B * max(cached)))

    @staticmethod
    def explain_idle(plan, cluster, table) -> dict[str, str]:
        from edgeft.planner.explain import idle_reasons

        held = {n: m for st in plan.planner["stages"] for n, m in zip(st["devices"], st["memory_bytes"])}
        return idle_reasons(plan.planner["stages"], plan.planner["micro_batches"], cluster, table, held)

    def setup(self) -> None:
        ctx = self.ctx
        C.check_blockwise_method(ctx)
        lay = ctx.spec.layout
        self.stages = stages = lay["stages"]
        self.M = int(lay["micro_batches"])
        C.build(ctx)
        model = self.model = ctx.model
        self.side = side = not ctx.method.trains_backbone  # a side network trains on the frozen backbone's taps (PAC)
        self.view = model.view if side else type(ctx.backbone.view)(model, ctx.backbone.arch.family)
        if side:
            P.check(model)
        self.S = len(stages)
        self.si = si = next(i for i, st in enumerate(stages) if ctx.rank in st["ranks"])
        st = stages[si]
        self.j = st["ranks"].index(ctx.rank)
        self.start, self.end = st["blocks"]
        self.world = world = list(range(ctx.group.world))
        self.named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.params = list(self.named.values())
        total_steps = C.steps_per_epoch(ctx) * ctx.spec.train.epochs
        self.opt, self.sched = C.make_optimizer(ctx, self.params, total_steps)
        self.objective, self.label_ids = ctx.featurizer.objective, ctx.featurizer.label_token_ids
        self.last = si == self.S - 1
        self.loss_rank = stages[-1]["ranks"][0]
        self.my_taps = P.stage_taps(model, self.start, self.end) if side else []
        self.cache_shares = {int(k): float(v)
                             for k, v in (lay.get("cached_shares") or {r: 1.0 for r in world}).items()}
        self.kept: list = []  # (sample ids, feature indices, taps (rows, P, n_mine, H), mask) for the cache exchange
        self.phase = "pipeline"
        self.fill_first = ctx.method.fills_cache_first("hybrid")
        self.shard = "all" if ctx.rank == 0 else None  # every rank holds the same trainables: rank 0 saves them
        with ctx.precision.autocast():
            self.fill_s = self._fill() if self.fill_first else None
        # The dev metrics before training come after the fill (no step has run yet): during the fill the other ranks
        # compute at the same time, so an evaluation there shared the cores and delayed this rank's fill, which all
        # wait for; here they wait (without the step-sized timeout) and it has the cores to itself (evaluate_full).
        self.before = C.evaluate_before(ctx, model) if ctx.spec.evaluate and ctx.rank == self.loss_rank else None
        C.wait_for_evaluation(ctx)

    # -- rows and neighbours -----------------------------------------------------------------------------
    def _rows_of(self, stage: int, m: int, mbs) -> list[tuple[int, int]]:
        lo, hi = mbs[m]
        return [(lo + a, lo + b) for a, b in share_rows(hi - lo, self.stages[stage]["shares"])]

    def _overlaps(self, mine, stage: int, m: int, mbs):
        """(rank, lo, hi) of stage `stage`'s devices whose rows of micro-batch m overlap `mine`."""
        for (a, b), r in zip(self._rows_of(stage, m, mbs), self.stages[stage]["ranks"]):
            lo, hi = max(a, mine[0]), min(b, mine[1])
            if lo < hi:
                yield r, lo, hi

    # -- one micro-batch through this stage ----------------------------------------------------------------
    def _fwd(self, m, batch, mbs, units_total, saved):
        ctx, si = self.ctx, self.si
        mine = self._rows_of(si, m, mbs)[self.j]
        if mine[0] == mine[1]:
            saved[m] = None
            return
        part = C.slice_rows(batch, *mine)
        mask = part["attention_mask"]
        inputs = {}
        if si > 0:
            got = [ctx.comm.recv(r) for r, *_ in self._overlaps(mine, si - 1, m, mbs)]
            inputs = {k: torch.cat([g[k] for g in got]) for k in got[0]}
        with ctx.emu.compute():
            if self.side:
                out, loss = _pac_stage(self.model, part, inputs, mask, si, self.last, self.start, self.end,
                                       self.my_taps, self.objective, self.label_ids, self.kept)
            else:
                out, loss = _block_stage(self.view, part, inputs, mask, si, self.last, self.start, self.end,
                                         self.objective, self.label_ids)
            if loss is not None:
                loss = loss * (C.loss_units(part, self.objective) / units_total)
        saved[m] = (inputs, out, loss)
        if not self.last:
            for r, lo, hi in self._overlaps(mine, si + 1, m, mbs):
                ctx.comm.send({k: v[lo - mine[0]:hi - mine[0]] for k, v in out.items()}, r)

    def _bwd(self, m, mbs, saved):
        ctx, si = self.ctx, self.si
        item = saved.pop(m)
        if item is None:
            return
        inputs, out, loss = item
        mine = self._rows_of(si, m, mbs)[self.j]
        key = "s" if self.side else "h"
        with ctx.emu.compute():
            if self.last:
                C.backward(ctx, loss)
            else:
                got = [ctx.comm.recv(r)["g"] for r, *_ in self._overlaps(mine, si + 1, m, mbs)]
                if out[key].requires_grad:
                    out[key].backward(torch.cat(got))
        if si > 0:
            g = inputs[key].grad
            for r, lo, hi in self._overlaps(mine, si - 1, m, mbs):
                ctx.comm.send({"g": g[lo - mine[0]:hi - mine[0]]}, r)
        return float(loss.detach()) if self.last else None

    def _pipeline_step(self, indices):
        ctx = self.ctx
        batch = C.to_device(ctx.featurizer.collate([ctx.train_feats[i] for i in indices]), ctx.group.device)
        batch["_feat_idx"] = list(indices)
        units_total = C.loss_units(batch, self.objective)
        mbs = C.split_rows(len(indices), min(self.M, len(indices)))
        nmb = len(mbs)
        warm = min(self.S - self.si - 1, nmb)
        saved, loss_sum = {}, 0.0
        for m in range(warm):
            self._fwd(m, batch, mbs, units_total, saved)
        for i in range(nmb - warm):
            self._fwd(warm + i, batch, mbs, units_total, saved)
            loss_sum += self._bwd(i, mbs, saved) or 0.0
        for m in range(nmb - warm, nmb):
            loss_sum += self._bwd(m, mbs, saved) or 0.0
        return self._finish_step(loss_sum)

    def _finish_step(self, loss_sum):
        ctx, params = self.ctx, self.params
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        lt = torch.tensor([loss_sum], dtype=torch.float32, device=ctx.group.device)
        C.sync_gradients(ctx, [p.grad for p in params], self.world, exact=[lt])
        # every rank now holds the same summed gradients: the global norm is local (no second collective)
        if C.clip_global(ctx, params, [ctx.rank]):
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(lt) if ctx.rank == self.loss_rank else None

    # -- PAC later epochs: data parallel on the cache ------------------------------------------------
    def _dp_step(self, indices):
        ctx, objective = self.ctx, self.objective
        feats = [ctx.train_feats[i] for i in indices]
        batch = C.to_device(ctx.featurizer.collate(feats), ctx.group.device)
        units_total = C.loss_units(batch, objective)
        rows = [b for b, f in enumerate(feats) if owner_of(str(f["id"]), self.cache_shares) == ctx.rank]
        loss_sum = 0.0
        if rows:
            sel = torch.tensor(rows, device=ctx.group.device)
            part = {k: (v[sel] if torch.is_tensor(v) else [v[r] for r in rows]) for k, v in batch.items()}
            with ctx.emu.compute():
                loss, _, _ = forward(self.model, part, objective, self.label_ids)
                loss = loss * (C.loss_units(part, objective) / units_total)
                C.backward(ctx, loss)
            loss_sum = float(loss.detach())
        return self._finish_step(loss_sum)

    def step(self, epoch: int, indices: list[int], global_step: int) -> float | None:
        out = (self._dp_step if self.phase == "cache" else self._pipeline_step)(indices)
        model = self.model
        if self.side and model.cache is not None:  # for the launcher's progress line
            self.ctx.beat.update(cache_hits=model.cache.stats.hits, cache_misses=model.cache.stats.misses)
        return out

    # -- PAC with tap_norm=channel: a forward-only pipeline fills the cache before the first step ----------
    def _fill_fwd(self, m, batch, mbs):
        ctx, si, model = self.ctx, self.si, self.model
        mine = self._rows_of(si, m, mbs)[self.j]
        if mine[0] == mine[1]:
            return
        part = C.slice_rows(batch, *mine)
        mask = part["attention_mask"]
        h = None
        if si > 0:
            got = [ctx.comm.recv(r) for r, *_ in self._overlaps(mine, si - 1, m, mbs)]
            h = torch.cat([g["h"] for g in got])
        with ctx.emu.compute(), torch.no_grad():
            if si == 0:
                h = self.view.embed(part["input_ids"], mask, part.get("token_type_ids"))
            h, taps = P.run_stage_backbone(model, h, self.start, self.end, mask)
            if taps is not None:
                self.kept.append((list(part["ids"]), list(part["_feat_idx"]), taps.cpu(), mask.cpu()))
        if not self.last:
            for r, lo, hi in self._overlaps(mine, si + 1, m, mbs):
                ctx.comm.send({"h": h[lo - mine[0]:hi - mine[0]]}, r)

    def _fill(self) -> float:
        import time

        ctx = self.ctx
        t0 = time.perf_counter()
        ctx.log("phase", epoch=0, phase="fill")
        batches = fill_batches(len(ctx.train_feats), ctx.spec.train, [len(f["input_ids"]) for f in ctx.train_feats])
        for k, idx in enumerate(batches):
            ctx.beat.update(step=0, epoch=0, phase="fill", units=k)
            batch = C.to_device(ctx.featurizer.collate([ctx.train_feats[i] for i in idx]), ctx.group.device)
            batch["_feat_idx"] = list(idx)
            mbs = C.split_rows(len(idx), min(self.M, len(idx)))
            for m in range(len(mbs)):
                self._fill_fwd(m, batch, mbs)
        ctx.comm.flush()
        ctx.done_before_steps = len(batches)
        ctx.beat.update(units=len(batches))
        _exchange_cache(ctx, self.model, self.kept, self.cache_shares, self.world)
        self.kept.clear()
        rows = _fit_channel_stats(ctx, self.model, self.cache_shares, self.world, {i for b in batches for i in b})
        ctx.comm.barrier()
        seconds = time.perf_counter() - t0
        ctx.log("fill_done", seconds=seconds, stats_rows=rows)
        return seconds

    # -- epochs ------------------------------------------------------------------------------------------
    def epoch_start(self, epoch: int, first_batch: int) -> None:
        cache_ready = self.side and self.model.cache is not None and (epoch > 0 or self.fill_first)
        self.phase = "cache" if cache_ready else "pipeline"
        self.ctx.log("phase", epoch=epoch + 1, phase=self.phase)
        self.ctx.beat.update(phase=self.phase)

    def epoch_end(self, epoch: int) -> dict | None:
        ctx, model = self.ctx, self.model
        if (self.side and self.phase == "pipeline" and model.cache is not None
                and epoch + 1 < ctx.spec.train.epochs):
            _exchange_cache(ctx, model, self.kept, self.cache_shares, self.world)
            self.kept.clear()
        if ctx.spec.evaluate and ctx.rank == self.loss_rank:
            return C.evaluate_full(ctx, model)
        return None

    def finish(self, res) -> dict:
        res.fill_s = self.fill_s
        if self.shard == "all":  # every rank holds the same trainables; the one that checkpoints them saves them
            C.save_adapter(self.ctx, self.model)
        info = {"role": f"stage {self.si} replica {self.j}", "blocks": [self.start, self.end], "stage": self.si,
                "loop": res}
        if self.side and self.model.cache is not None:
            info["cache"] = self.model.cache.describe()
        return info


def _block_stage(view, part, inputs, mask, si, last, start, end, objective, label_ids):
    """Blocks [start, end) with autograd (lora/full/bitfit). Returns ({'h': out}, loss or None)."""
    if si == 0:
        h = view.embed(part["input_ids"], mask, part.get("token_type_ids"))
    else:
        h = inputs["h"].requires_grad_(True)
    if last:
        loss, _, _ = forward(C.HiddenModel(view, start, h), part, objective, label_ids)
        return {}, loss
    return {"h": view.run_blocks(h, start, end, mask)}, None


def _pac_stage(model, part, inputs, mask, si, last, start, end, my_taps, objective, label_ids, kept):
    """Frozen blocks [start, end) + this stage's adapters' part of the side feature."""
    view = model.view
    if si == 0:
        with torch.no_grad():
            h = view.embed(part["input_ids"], mask, part.get("token_type_ids"))
        s_in = None
    else:
        h = inputs["h"]
        s_in = inputs["s"].requires_grad_(True)
    h, taps = P.run_stage_backbone(model, h, start, end, mask)
    s = s_in
    if taps is not None:
        kept.append((list(part["ids"]), list(part["_feat_idx"]), taps.detach().cpu(), mask.cpu()))
        contrib = P.partial_side(model.side, taps, my_taps)
        s = contrib if s is None else s + contrib
    if not last:
        if s is None:  # no taps in this stage: pass a zero side feature on
            width = 1 if model.positions != "all" else h.shape[1]
            s = h.new_zeros(h.shape[0], width, model.side.width)
        return {"h": h, "s": s}, None
    final = model.side.join(taps[..., -1, :], P.finish_side(model.side, s, mask if model.positions == "all" else None))
    if model.task_head is not None:
        # pooled as PacModel.forward pools (mean for BERT, the last real token for Llama), not the last column,
        # which is padding in a right-padded batch
        final = model.head_input(final)
        pooled = select(final, mask, model.head_pool)[:, 0] if model.positions == "all" else final[:, 0]
        out = LogitsModel(model.task_head, pooled, per_token=False)
    else:
        out = LogitsModel(view.final, final, per_token=True)
    loss, _, _ = forward(out, part, objective, label_ids)
    return {}, loss


def _exchange_cache(ctx, model, kept, shares, world) -> None:
    """Send every kept tap to the owner of its sample; owners write whole samples into their cache."""
    import time

    t0 = time.perf_counter()
    per_dst: dict[int, list] = {r: [] for r in world}
    for ids, fidx, taps, mask in kept:
        for b, (sid, fi) in enumerate(zip(ids, fidx)):
            rows = taps[b][mask[b].bool()] if model.positions == "all" else taps[b]
            per_dst[owner_of(str(sid), shares)].append((fi, rows))
    mine_idx = P.stage_taps(model, *ctx.spec.layout["stages"][_stage_of(ctx)]["blocks"])
    pieces: dict[int, dict[int, torch.Tensor]] = {}  # feature index -> {tap index: (P, H)}

    def absorb(fidx: list[int], blobs: list[torch.Tensor], tap_idx: list[int]) -> None:
        for fi, blob in zip(fidx, blobs):
            d = pieces.setdefault(fi, {})
            for k, t in enumerate(tap_idx):
                d[t] = blob[:, k]

    absorb([fi for fi, _ in per_dst[ctx.rank]], [r for _, r in per_dst[ctx.rank]], mine_idx)
    def payload_for(dst: int) -> dict:
        items = per_dst[dst]
        payload = {"n": torch.tensor([len(items)]), "taps": torch.tensor(mine_idx or [-1])}
        if items:
            payload["fidx"] = torch.tensor([fi for fi, _ in items])
            payload["len"] = torch.tensor([r.shape[0] for _, r in items])
            payload["data"] = torch.cat([r for _, r in items])
        return payload

    def take(got: dict) -> None:
        if int(got["n"]) and int(got["taps"][0]) >= 0:
            absorb(got["fidx"].tolist(), list(torch.split(got["data"].cpu(), got["len"].tolist())), got["taps"].tolist())

    # Pairs in one global order; in each pair the lower rank sends first. Every rank meets its pairs
    # in the same order, so the blocking exchanges cannot deadlock, and no two ranks ever send to each
    # other at once (NCCL failed on that with unbatched sends in both directions).
    for a, b in [(a, b) for i, a in enumerate(world) for b in world[i + 1:]]:
        if ctx.rank == a:
            ctx.comm.send(payload_for(b), b)
            ctx.comm.flush()
            take(ctx.comm.recv(b))
        elif ctx.rank == b:
            take(ctx.comm.recv(a))
            ctx.comm.send(payload_for(a), a)
            ctx.comm.flush()
    ctx.comm.flush()
    n_taps = len(model.taps)
    complete = [fi for fi, d in pieces.items() if len(d) == n_taps]
    for fi in complete:
        f = ctx.train_feats[fi]
        taps = torch.stack([pieces[fi][t] for t in range(n_taps)], dim=1)  # (P, n, H)
        ids = torch.tensor([f["input_ids"]])
        mask = torch.ones_like(ids)
        tt = torch.tensor([f["token_type_ids"]]) if "token_type_ids" in f else None
        P.fill_cache(model, ids, mask, tt, [f["id"]], taps.unsqueeze(0).to(ctx.group.device))
    ctx.log("cache_filled", samples=len(complete), incomplete=len(pieces) - len(complete),
            megabytes=model.cache.nbytes / 2**20, seconds=time.perf_counter() - t0)


def _stage_of(ctx) -> int:
    return next(i for i, st in enumerate(ctx.spec.layout["stages"]) if ctx.rank in st["ranks"])


def _fit_channel_stats(ctx, model, shares, world, filled: set[int]) -> int:
    """tap_norm=channel over ranks: each owner measures the moments of its cached samples among the first
    norm_samples (of those `filled`), one all-reduce gathers every rank's (rows, mean, m2) into its own slot, and all merge them
    in rank order, so every rank holds the same statistics the single-device pass measures."""
    from edgeft.methods.pac.model import STATS_BATCH
    from edgeft.methods.pac.side_network import merge_moments

    side = model.side
    samples = int(ctx.method.options.norm_samples)
    mine = [f for i, f in enumerate(ctx.train_feats[:samples]) if i in filled and owner_of(str(f["id"]), shares) == ctx.rank]

    def batches():
        for k in range(0, len(mine), STATS_BATCH):
            b = C.to_device(ctx.featurizer.collate(mine[k:k + STATS_BATCH]), ctx.group.device)
            taps = model.tapped(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), b["ids"])
            yield taps, (b["attention_mask"] if model.positions == "all" else None)

    with ctx.emu.compute():
        rows, mean, m2 = side.tap_moments(batches())
    shape = (side.num_taps, side.hidden)
    size = side.num_taps * side.hidden
    slots = torch.zeros(len(world), 1 + 2 * size, dtype=torch.float64, device=ctx.group.device)
    if rows:
        slots[world.index(ctx.rank)] = torch.cat([torch.tensor([float(rows)], dtype=torch.float64,
                                                               device=slots.device), mean.reshape(-1), m2.reshape(-1)])
    ctx.comm.all_reduce_([slots], world)
    acc = (0, None, None)
    for row in slots:
        if row[0] > 0:
            acc = merge_moments(acc, (int(row[0]), row[1:1 + size].reshape(shape), row[1 + size:].reshape(shape)))
    return side.set_tap_stats(*acc)


def fill_batches(n: int, cfg, lengths: list[int] | None = None) -> list[list[int]]:
    """The samples the run's epochs train on (all n unless max_steps_per_epoch cuts epochs short), in batches
    of the training batch size: what the forward-only fill passes through the pipeline (and the launcher's
    progress bar counts). With `lengths` (tokens per sample) the batches are of similar length: the cache
    keeps each sample's own tokens, so the fill's order is free, and SST-2's 1,024 rows at batch 32 then pad
    to 21.5 tokens a row instead of 43.6, halving the fill's compute."""
    used = sorted({i for e in range(cfg.epochs)
                   for b in epoch_batches(n, cfg.batch_size, cfg.seed, e, cfg.max_steps_per_epoch) for i in b})
    if lengths is not None:
        used.sort(key=lambda i: lengths[i])  # stable: ties keep index order
    return [used[k:k + cfg.batch_size] for k in range(0, len(used), cfg.batch_size)]
