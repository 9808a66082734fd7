"""A method is one class + @register_method: the planner and the block-wise runtime then ask it, not its name."""

from types import SimpleNamespace

import pytest

from edgeft.errors import ConfigError
from edgeft.methods import get_method
from edgeft.methods.base import METHODS, BlockCost, Method, register_method
from edgeft.models.arch import PRESETS
from edgeft.planner.cluster import parse_cluster
from edgeft.planner.costmodel import Workload, analytic_costs
from edgeft.planner.hybrid_dp import plan_hybrid
from edgeft.planner.hybrid_pricing import StagePricer
from edgeft.runtime import placement as planmod
from edgeft.runtime.strategies.common import check_blockwise_method


@pytest.fixture
def throwaway_methods():
    @register_method
    class SideProbe(Method):
        """Trains 100 parameters beside each frozen block, from a cache after the first epoch."""

        name = priced_as = "side-probe-test"  # priced by its own block_cost
        supports_blockwise = caches_backbone = True
        trains_backbone = False

        @classmethod
        def block_cost(cls, arch, workload, dense):
            return BlockCost(trainable=100, fwd=dense.fwd + 1.0, bwd_pass=0.0, bwd_train=7.0, act_saved=11.0)

        def fills_cache_first(self, strategy):
            return strategy == "hybrid"

    @register_method
    class NoCostProbe(Method):
        """Has no cost model and does not run block by block."""

        name = "nocost-probe-test"

    try:
        yield SideProbe, NoCostProbe
    finally:
        del METHODS["side-probe-test"], METHODS["nocost-probe-test"]


def _cluster():
    return parse_cluster({"name": "t", "devices": [
        {"name": f"d{i}", "compute": {"flops": r}, "memory_gb": 8, "link": {"rate_mbps": m}}
        for i, (r, m) in enumerate([(30e9, 90), (25e9, 30), (40e9, 15)])],
        "servers": [{"name": "edge", "compute": {"flops": 1e13}, "memory_gb": 80, "band_mhz": 20}]})


def test_the_planner_prices_a_registered_method_with_its_own_cost_model(throwaway_methods):
    arch = PRESETS["smollm2-135m"]
    t = analytic_costs(arch, Workload(batch=4, seq_len=64, method="side-probe-test"))
    frozen = analytic_costs(arch, Workload(batch=4, seq_len=64, method="full"))
    assert (t.trainable == 100).all() and (t.bwd_train == 7.0).all() and (t.act_saved == 11.0).all()
    assert (t.fwd == frozen.fwd + 1.0).all()
    # the runtime's table goes through the same hooks (priced_as, cost_workload)
    rt = planmod.make_table(arch, "side-probe-test", 4, 64, {}, "causal_lm")
    assert (rt.trainable == 100).all()
    # the hybrid planner asks the method: a frozen backbone sends its boundary one way, later epochs are cached
    assert StagePricer(_cluster(), t, 64).boundary_trips == 1
    assert StagePricer(_cluster(), frozen, 64).boundary_trips == 2
    assert plan_hybrid(_cluster(), t, samples=64).cached_shares is not None
    assert plan_hybrid(_cluster(), frozen, samples=64).cached_shares is None


def test_a_method_without_cost_model_or_blockwise_support_gets_clear_errors(throwaway_methods):
    arch = PRESETS["smollm2-135m"]
    with pytest.raises(ConfigError, match="'nocost-probe-test' has no cost model; choose one of"):
        Workload(method="nocost-probe-test")
    with pytest.raises(ConfigError, match="'nocost-probe-test' has no cost model for planning"):
        planmod.make_table(arch, "nocost-probe-test", 4, 64, {})
    with pytest.raises(ConfigError, match="'nocost-probe-test' cannot run block by block"):
        check_blockwise_method(SimpleNamespace(spec=SimpleNamespace(method="nocost-probe-test", strategy="hybrid")))
    check_blockwise_method(SimpleNamespace(spec=SimpleNamespace(method="side-probe-test", strategy="hybrid")))
    assert get_method("side-probe-test").fills_cache_first("hybrid")
    assert not get_method("nocost-probe-test").fills_cache_first("hybrid")


@pytest.mark.parametrize("name", ["prompt", "bitfit", "mezo", "fwdgrad"])  # bitfit: the runtime prices it as lora
def test_built_in_methods_without_cost_model_say_so(name):
    with pytest.raises(ConfigError, match="has no cost model; choose one of \\('full', 'lora', 'pac'\\)"):
        Workload(method=name)
