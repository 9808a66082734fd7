"""Generated clusters, malformed or at the ends of the physical ranges: every strategy either stops
with a clear EdgeftError or returns a plan whose every number is finite."""

import copy
import json
import math
import warnings
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from edgeft.errors import ConfigError, EdgeftError
from edgeft.planner import Workload, make_plan, parse_cluster, resolve_arch
from edgeft.planner.cluster import RANGES

CLUSTERS = Path(__file__).resolve().parents[2] / "examples" / "clusters"
# home-lab: the cycle form and channel links every strategy (split included) can plan; four-phones: flops + rates.
BASES = {name: yaml.safe_load((CLUSTERS / name).read_text()) for name in ("home-lab.yaml", "four-phones.yaml")}
ARCH = resolve_arch("minilm-l6")  # small, so one plan takes well under a second
WORKLOAD = Workload(batch=4, seq_len=64, method="lora")
STRATEGIES = st.sampled_from(["deft", "split", "hybrid"])
MISSING = object()
# Deterministic examples, so CI sees the same ones; about 20 s together on one core.
RUN = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

BAD_VALUES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 1e-300, -1e-300, 0, 0.0, -1, True, False, None,
                     "abc", "1e10", "nan", "-inf", "", [], [1, 2, 3], {"x": 1}, 10**400, MISSING]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-7, max_value=19).map(lambda e: 10.0**e),  # in range for some fields, not others
)


def _paths(node, path=()):
    """Paths of every key of every mapping, and of every list item (ranges, positions, devices)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, val in items:
        yield path + (key,)
        yield from _paths(val, path + (key,))


def _field(path):
    return [k for k in path if isinstance(k, str)][-1]


def _get(data, path):
    for key in path:
        data = data[key]
    return data


@st.composite
def malformed(draw):
    """1-3 keys or items set to NaN, inf, huge, tiny, negative, bool, text, a list, a mapping, or removed."""
    data = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    changed = []
    for path in draw(st.lists(st.sampled_from(sorted(_paths(data), key=str)), min_size=1, max_size=3, unique=True)):
        try:
            parent = _get(data, path[:-1])
            parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced this path's parent
        value = draw(BAD_VALUES)
        if value is MISSING and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = None if value is MISSING else value
        changed.append(path)
    return data, changed, draw(STRATEGIES)


@st.composite
def extreme(draw):
    """1-4 numbers moved to the ends of their documented physical ranges, or anywhere inside (log-scaled)."""
    data = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    numbers = sorted((p for p in _paths(data) if _field(p) in RANGES and isinstance(_get(data, p), (int, float))), key=str)
    changed = []
    for path in draw(st.lists(st.sampled_from(numbers), min_size=1, max_size=4, unique=True)):
        lo, hi, _ = RANGES[_field(path)]
        inside = st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10**e) if lo > 0 else st.floats(lo, hi)
        value = draw(st.one_of(st.sampled_from([lo, hi]), inside))
        if _field(path) in ("cores", "samples", "seq_len"):
            value = max(int(value), 1)
        _get(data, path[:-1])[path[-1]] = value
        changed.append(path)
    return data, changed, draw(STRATEGIES)


def _finite(node, where="plan"):
    if isinstance(node, dict):
        for key, val in node.items():
            _finite(val, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, val in enumerate(node):
            _finite(val, f"{where}[{i}]")
    elif isinstance(node, float):
        assert math.isfinite(node), f"{where} = {node}"


def check(case) -> str:
    """A ConfigError naming the file and a changed field, a PlanError from the solver, or a finite plan."""
    data, changed, strategy = case
    text = yaml.safe_dump(data)  # as a user's file holds them: .nan, .inf, true, quoted text
    try:
        spec = parse_cluster(yaml.safe_load(text), "generated.yaml")
    except ConfigError as err:
        msg = str(err)
        assert msg.startswith("generated.yaml: ")
        assert any(_field(path) in msg for path in changed), f"{changed} not named in: {msg}"
        return "invalid"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = make_plan(spec, ARCH, WORKLOAD, strategy, samples=64)
    except EdgeftError as err:
        assert str(err).strip()
        return "infeasible"
    _finite(plan.to_dict())
    json.loads(plan.to_json(), parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(f"{c} in plan.json")))
    return "plan"


@settings(max_examples=60, **RUN)
@given(malformed())
def test_malformed_cluster_gives_clear_error_or_finite_plan(case):
    check(case)


@settings(max_examples=40, **RUN)
@given(extreme())
def test_cluster_at_range_ends_gives_finite_plan_or_clear_error(case):
    check(case)
