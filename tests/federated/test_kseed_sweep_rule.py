"""The RULE that picks FedKSeed's defaults (bench/fed_kseed_sweep.py), on made-up sweep rows: drift and the
untuned model gate, the server-held Rouge-L gain ranks, ties go to the smaller step size, then fewer clients."""

from edgeft.cli.bench import bench_script


def rows(name, gain, drift=0.0, seeds=(0, 1, 2)):
    """One sweep row per seed: validation loss falling to its lowest, then `drift` back up; Rouge-L +gain."""
    return [{"name": name, "seed": s, "rounds": [
        {"round": 0, "val_loss": 3.0, "train_rougeL": 0.15},
        {"round": 1, "val_loss": 2.9, "train_rougeL": 0.15},
        {"round": 2, "val_loss": 2.9 + drift, "train_rougeL": 0.15 + gain}]} for s in seeds]


def test_the_step_grid_prefers_the_smaller_lr_then_fewer_clients_within_the_tie():
    k = bench_script("fed_kseed_sweep")
    grid = k.STEP_GRID
    assert max(g["clients_per_round"] * g["local_steps"] for g in grid.values()) == 150  # no larger budget
    equal = rows("lr0.000225-12x10-cosine", 0.02) + rows("lr0.000225-6x25-cosine", 0.02)
    assert k.choose(equal, grid)[0] == "lr0.000225-6x25-cosine"  # same lr and gain: fewer uploads a round
    backwards = dict(reversed(list(grid.items())))  # the tie is broken by the rule, not by the grid's order
    assert k.choose(equal, backwards)[0] == "lr0.000225-6x25-cosine"
    near = rows("lr0.0004-6x25-cosine", 0.020) + rows("lr0.0003-6x25-cosine", 0.016)  # within 0.5 points
    assert k.choose(near, grid)[0] == "lr0.0003-6x25-cosine"
    apart = rows("lr0.0004-6x25-cosine", 0.030) + rows("lr0.0003-6x25-cosine", 0.016)
    assert k.choose(apart, grid)[0] == "lr0.0004-6x25-cosine"


def test_a_setting_that_drifts_or_lacks_a_seed_is_not_chosen():
    k = bench_script("fed_kseed_sweep")
    grid = k.STEP_GRID
    drifting = rows("lr0.0004-6x25-cosine", 0.05, drift=0.01) + rows("lr0.0003-6x25-cosine", 0.01)
    assert k.choose(drifting, grid)[0] == "lr0.0003-6x25-cosine"
    short = rows("lr0.0004-6x25-cosine", 0.05, seeds=(0, 1)) + rows("lr0.0003-6x25-cosine", 0.01)
    chosen, table = k.choose(short, grid)
    assert chosen == "lr0.0003-6x25-cosine" and table["lr0.0004-6x25-cosine"]["seeds"] == 2
    assert k.choose(rows("lr0.0004-6x25-cosine", 0.05, drift=0.01), grid)[0] is None
