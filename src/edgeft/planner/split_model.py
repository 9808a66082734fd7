"""System model of split fine-tuning with energy, delay and stability (Liu & Zhao, MobiHoc '24).

User n trains its first alpha_n of U layers, its edge server m the rest; FDMA uplink of the cut
activations. Units inside: frequencies in GHz, bandwidth in MHz, power in W, data in Mbit, so the
convex subproblems stay well scaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgeft.errors import PlanError
from edgeft.planner.cluster import ClusterSpec
from edgeft.planner.costmodel import paper_psi

LN2 = math.log(2.0)


@dataclass(frozen=True)
class SplitSettings:
    """Weights and constants of the objective (the paper does not give kappa, L, k_n: ours, in the cluster)."""

    batch: int = 512
    hidden: int = 1024
    layers: int = 32
    w_t: float = 1.0
    w_e: float = 1.0
    w_s: float = 1.0
    lipschitz: float = 1000.0
    act_bits: int = 16  # bits per activation element sent at the cut
    comm_delay: bool = True  # count uplink delay s/r in the delay term (the paper counts its energy only)


@dataclass
class SplitInstance:
    names: list[str]
    server_names: list[str]
    psi: np.ndarray  # N, FLOPs per layer (forward+backward)
    CD: np.ndarray  # N, user FLOPs per cycle
    f_lo: np.ndarray  # N, GHz
    f_hi: np.ndarray
    kappa_u: np.ndarray  # N
    p_lo: np.ndarray  # N, W
    p_hi: np.ndarray
    gamma: np.ndarray  # N x M, SNR per W per MHz: g / (N0 * 1e6)
    data_mbit: np.ndarray  # N, bits at the cut per step, in Mbit
    samples: np.ndarray  # N
    F: np.ndarray  # M, server GHz to share
    CD_s: np.ndarray  # M
    kappa_s: np.ndarray  # M
    W: np.ndarray  # M, MHz to share
    s: SplitSettings = field(default_factory=SplitSettings)
    alpha_max: np.ndarray | None = None  # N, the most layers each device's memory holds (default: U-1 for all)
    alpha_min: np.ndarray | None = None  # N, the fewest layers a user may keep (default 1): its server's memory
    latency_s: np.ndarray | None = None  # N, the link's one-way latency: paid by each step's upload of the cut

    @property
    def a_max(self) -> np.ndarray:
        """Per user, the largest split point it may take: U-1, or fewer where its memory holds fewer layers."""
        top = np.full(len(self.psi), self.s.layers - 1.0)
        return top if self.alpha_max is None else np.minimum(top, self.alpha_max)

    @property
    def a_min(self) -> np.ndarray:
        """Per user, the smallest split point it may take: 1, or more where its server cannot hold the layers above
        a lower one (split_plan raises it); never above a_max."""
        low = np.ones(len(self.psi)) if self.alpha_min is None else np.maximum(1.0, self.alpha_min)
        return np.minimum(low, self.a_max)

    @property
    def N(self) -> int:
        return len(self.psi)

    @property
    def M(self) -> int:
        return len(self.F)

    # per-layer cost coefficients: user A(f) = a1/f + a2 f^2, edge B(fe) = b1/fe + b2 fe^2 (f in GHz)
    def user_coef(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.s
        return s.w_t * self.psi / (1e9 * self.CD), s.w_e * self.kappa_u * 1e18 * self.psi / self.CD

    def edge_coef(self, server: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.s
        cd, ks = self.CD_s[server], self.kappa_s[server]
        return s.w_t * self.psi / (1e9 * cd), s.w_e * ks * 1e18 * self.psi / cd

    def stab_coef(self) -> np.ndarray:
        return self.s.w_s * 2 * self.s.lipschitz**2 / self.samples


@dataclass
class SplitPoint:
    """A full assignment of the variables (alpha may be fractional inside the solver)."""

    alpha: np.ndarray
    server: np.ndarray  # N ints
    f: np.ndarray  # GHz
    fe: np.ndarray  # GHz from its server
    p: np.ndarray  # W
    b: np.ndarray  # MHz

    def copy(self) -> "SplitPoint":
        return SplitPoint(*(np.array(v, copy=True) for v in (self.alpha, self.server, self.f, self.fe, self.p, self.b)))


# where a user sees a cluster the split strategy can plan
SPLIT_EXAMPLE = "examples/clusters/home-lab.yaml is a cluster written that way"


def rate_mbps(inst: SplitInstance, pt: SplitPoint) -> np.ndarray:
    g = inst.gamma[np.arange(inst.N), pt.server]
    return pt.b * np.log2(1 + g * pt.p / pt.b)


def breakdown(inst: SplitInstance, pt: SplitPoint) -> dict[str, np.ndarray]:
    """Per-user delay (s), energy (J) and stability term, unweighted."""
    U = inst.s.layers
    a, srv = pt.alpha, pt.server
    t_user = a * inst.psi / (pt.f * 1e9 * inst.CD)
    e_user = a * inst.kappa_u * (pt.f * 1e9) ** 2 * inst.psi / inst.CD
    t_edge = (U - a) * inst.psi / (pt.fe * 1e9 * inst.CD_s[srv])
    e_edge = (U - a) * inst.kappa_s[srv] * (pt.fe * 1e9) ** 2 * inst.psi / inst.CD_s[srv]
    r = rate_mbps(inst, pt)
    t_up = inst.data_mbit / r
    e_comm = pt.p * t_up  # the radio transmits for t_up; the latency is waiting, not sending
    t_comm = t_up if inst.latency_s is None else t_up + inst.latency_s
    with np.errstate(divide="ignore"):
        stab = 2 * inst.s.lipschitz**2 / (inst.samples * (1 - a / U))
    return {
        "t_user": t_user, "e_user": e_user, "t_edge": t_edge, "e_edge": e_edge,
        "t_comm": t_comm, "e_comm": e_comm, "stability": stab,
    }


def objective(inst: SplitInstance, pt: SplitPoint) -> float:
    s = inst.s
    br = breakdown(inst, pt)
    delay = br["t_user"] + br["t_edge"] + (br["t_comm"] if s.comm_delay else 0.0)
    energy = br["e_user"] + br["e_edge"] + br["e_comm"]
    return float(np.sum(s.w_t * delay + s.w_e * energy + s.w_s * br["stability"]))


def totals(inst: SplitInstance, pt: SplitPoint) -> dict[str, float]:
    br = breakdown(inst, pt)
    return {
        "delay_s": float(np.sum(br["t_user"] + br["t_edge"] + br["t_comm"])),
        "energy_j": float(np.sum(br["e_user"] + br["e_edge"] + br["e_comm"])),
        "stability": float(np.sum(br["stability"])),
        "objective": objective(inst, pt),
    }


def feasible(inst: SplitInstance, pt: SplitPoint, tol: float = 1e-6) -> bool:
    U = inst.s.layers
    ok = np.all(pt.alpha >= inst.a_min - tol) and np.all(pt.alpha <= U - 1 + tol)
    ok &= np.all(pt.alpha <= inst.a_max + tol)
    ok &= np.all(pt.f >= inst.f_lo * (1 - tol)) and np.all(pt.f <= inst.f_hi * (1 + tol))
    ok &= np.all(pt.p >= inst.p_lo * (1 - tol)) and np.all(pt.p <= inst.p_hi * (1 + tol))
    for m in range(inst.M):
        on = pt.server == m
        ok &= pt.b[on].sum() <= inst.W[m] * (1 + tol) and pt.fe[on].sum() <= inst.F[m] * (1 + tol)
    return bool(ok)


def build_split_instance(cluster: ClusterSpec, settings: SplitSettings, seq_len: int,
                         layer_flops: Callable[[int], float] | None = None) -> SplitInstance:
    """Users are the cluster's devices, in the cycle form of compute (C, D, f range) and kappa.

    `layer_flops(seq)`: one layer's training FLOPs on `settings.batch` rows of `seq` tokens (psi); by default the
    paper's psi, which prices full fine-tuning of a GPT-shaped block whatever the method."""
    psi_of = layer_flops or (lambda seq: paper_psi(settings.batch, seq, settings.hidden))
    users, servers = cluster.devices, cluster.servers
    N0 = cluster.noise_w_per_hz()

    def kappa(spec_energy, compute) -> float:
        if spec_energy.kappa is not None:
            return spec_energy.kappa
        f = compute.freq_range_hz()[1]
        return spec_energy.power_w / f**3  # power = kappa f^3 in this model

    psi, CD, flo, fhi, ku, plo, phi, dm, ks = [], [], [], [], [], [], [], [], []
    for d in users:
        if d.compute.flops is not None:
            raise PlanError(
                f"{cluster.where}: device {d.name!r} gives compute.flops; the split strategy needs the "
                f"cycle form (cores, flops_per_cycle, freq_ghz range) to choose its frequency; "
                f"{SPLIT_EXAMPLE}"
            )
        seq = d.seq_len or seq_len
        psi.append(psi_of(seq))
        CD.append(d.compute.units)
        lo, hi = d.compute.freq_range_hz()
        flo.append(lo / 1e9)
        fhi.append(hi / 1e9)
        ku.append(kappa(d.energy, d.compute))
        p0, p1 = d.link.power_range()
        plo.append(max(p0, 1e-3))
        phi.append(p1)
        dm.append(settings.batch * seq * settings.hidden * settings.act_bits / 1e6)
        ks.append(d.samples)
    gamma = np.array([[cluster.gain(d, sv) / (N0 * 1e6) for sv in servers] for d in users])
    for sv in servers:
        if sv.compute.flops is not None:
            raise PlanError(f"server {sv.name!r}: the split strategy needs compute in cycle form (cores, "
                            f"flops_per_cycle, freq_ghz); {SPLIT_EXAMPLE}")
    return SplitInstance(
        names=[d.name for d in users],
        server_names=[s.name for s in servers],
        psi=np.array(psi), CD=np.array(CD), f_lo=np.array(flo), f_hi=np.array(fhi), kappa_u=np.array(ku),
        p_lo=np.array(plo), p_hi=np.array(phi), gamma=gamma, data_mbit=np.array(dm), samples=np.array(ks, float),
        F=np.array([s.compute.freq_range_hz()[1] / 1e9 for s in servers]),
        CD_s=np.array([s.compute.units for s in servers]),
        kappa_s=np.array([kappa(s.energy, s.compute) for s in servers]),
        W=np.array([s.band_mhz for s in servers]),
        s=settings,
        latency_s=np.array([d.link.latency_ms / 1000 for d in users]),
    )


def random_instance(rng: np.random.Generator, N: int, M: int, settings: SplitSettings | None = None,
                    area_m: float = 500.0) -> SplitInstance:
    """The paper's distributions (users U[0.5,1] GHz, C 4-6, servers U[1,3] GHz, C 2560-5120, D 1-2,
    p_max U[1,2] W, d U[512,1024], 20 MHz per server, PL 128.1+37.6 log10 d_km, -134 dBm noise per
    user band ~ -174 dBm/Hz); kappa, L and k_n are ours."""
    s = settings or SplitSettings()
    d = rng.integers(512, 1025, N)
    users = rng.uniform(0, area_m, (N, 2))
    srv = rng.uniform(0, area_m, (M, 2))
    dist = np.maximum(np.linalg.norm(users[:, None, :] - srv[None, :, :], axis=2), 10.0)
    pl_db = 128.1 + 37.6 * np.log10(dist / 1000)
    N0 = 10 ** ((-174 - 30) / 10)
    return SplitInstance(
        names=[f"user{n}" for n in range(N)], server_names=[f"server{m}" for m in range(M)],
        psi=np.array([paper_psi(s.batch, int(x), s.hidden) for x in d]),
        CD=rng.integers(4, 7, N).astype(float), f_lo=np.full(N, 0.1), f_hi=rng.uniform(0.5, 1.0, N),
        kappa_u=np.full(N, 1e-27), p_lo=np.full(N, 0.01), p_hi=rng.uniform(1, 2, N),
        gamma=10 ** (-pl_db / 10) / (N0 * 1e6), data_mbit=s.batch * d * s.hidden * s.act_bits / 1e6,
        samples=rng.integers(200, 1000, N).astype(float), F=rng.uniform(1, 3, M),
        CD_s=(rng.integers(2560, 5121, M) * rng.integers(1, 3, M)).astype(float),
        kappa_s=rng.uniform(0.5, 2.0, M) * 1e-18, W=np.full(M, 20.0), s=s,
    )


# ---- memory: what a split point asks of the device and of its server ------------------------------------------

def device_bytes(table, a: int) -> float:
    """A user's memory with the first `a` layers on it: the embedding and those layers' weights, their saved
    activations, and the trainable state (gradients, optimizer moments) of their trainable parameters."""
    dt = table.workload.dtype_bytes
    return float((table.embed_params + table.params[:a].sum()) * dt + table.act_saved[:a].sum()
                 + table.trainable_state_bytes(float(table.trainable[:a].sum())))


def server_bytes(table, alphas) -> float:
    """A server's memory for its users' parts above their split points: the frozen weights once (shared by every
    user, from the lowest split among them); per user, its own trainable weights and their state (gradients,
    optimizer moments), which persist between steps; and the saved activations of one user's step at a time (the
    largest), as a server runs its users' backward passes one after another."""
    alphas = [int(a) for a in alphas]
    if not alphas:
        return 0.0
    dt = table.workload.dtype_bytes
    frozen = table.params - table.trainable
    shared = (frozen[min(alphas):].sum() + table.head_params) * dt
    own = sum(table.trainable[a:].sum() * dt + table.trainable_state_bytes(float(table.trainable[a:].sum()))
              for a in alphas)
    acts = max(table.act_saved[a:].sum() + table.head_saved for a in alphas)
    return float(shared + own + acts)


def memory_alpha_max(cluster: ClusterSpec, table) -> np.ndarray:
    """Per device, the most leading layers (at most U-1) its memory_gb holds; a device that holds not even the
    first layer stops the plan, naming it."""
    U = table.num_layers
    caps = []
    for i, d in enumerate(cluster.devices):
        cap = d.memory_gb * 2**30
        fits = [a for a in range(1, U) if device_bytes(table, a) <= cap]
        if not fits:
            need = device_bytes(table, 1) / 2**30
            raise PlanError(f"{cluster.where}: devices[{i}]({d.name}).memory_gb = {d.memory_gb:g} holds "
                            f"not even the embedding and the first layer under split ({need:.2f} GiB at this batch "
                            "and length): give it more memory_gb, or plan a smaller --batch / --seq-len")
        caps.append(float(max(fits)))
    return np.array(caps)


def server_overloads(cluster: ClusterSpec, table, pt: SplitPoint) -> tuple[list[float], list[int]]:
    """Each server's memory for the plan's split points (bytes), and the servers that cannot hold theirs."""
    need, over = [], []
    for m, sv in enumerate(cluster.servers):
        b = server_bytes(table, [int(round(a)) for a, srv in zip(pt.alpha, pt.server) if srv == m])
        need.append(b)
        if b > sv.memory_gb * 2**30:
            over.append(m)
    return need, over


def lowest_fitting_split(cluster: ClusterSpec, table, inst: SplitInstance, pt: SplitPoint,
                         m: int) -> np.ndarray | None:
    """Split points for server m's users raised to the lowest common floor k at which the server holds their parts
    (fewer layers above the splits: less frozen weight, trainable state and activation on it), each capped by its
    own memory (a_max); the other users' unchanged. None when no floor helps."""
    mine = np.flatnonzero(pt.server == m)
    cap = cluster.servers[m].memory_gb * 2**30
    for k in range(int(min(pt.alpha[mine])) + 1, table.num_layers):
        trial = np.minimum(np.maximum(pt.alpha[mine], k), inst.a_max[mine])
        if server_bytes(table, trial) <= cap:
            alpha = pt.alpha.copy()
            alpha[mine] = trial
            return alpha
    return None


def check_server_memory(cluster: ClusterSpec, table, inst: SplitInstance, pt: SplitPoint) -> list[float]:
    """Each server's memory for the plan's split points (bytes); a server that cannot hold them stops the plan."""
    need, over = server_overloads(cluster, table, pt)
    for m in over[:1]:
        sv, users = cluster.servers[m], int(np.sum(pt.server == m))
        raise PlanError(f"{cluster.where}: servers[{m}]({sv.name}).memory_gb = {sv.memory_gb:g} cannot hold "
                        f"the layers its {users} user(s) leave to it ({need[m] / 2**30:.2f} GiB: the frozen "
                        "weights once, each user's trainable weights and state, one step's activations) even with "
                        "each user keeping as many layers as its own memory holds: give it more memory_gb, "
                        "add a server, or plan a smaller --batch / --seq-len")
    return need
