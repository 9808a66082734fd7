"""bench/fed_quality.py: a run's folder is held by one process at a time."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("fed_quality_bench", ROOT / "bench" / "fed_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_run_folder_in_use_stops_a_second_process_before_it_clears_it(tmp_path):
    fq = bench()
    folder = str(tmp_path / "runs" / "bench-fed-quality-dolly-fedkseed-2")
    with fq.run_folder_held(folder):
        with pytest.raises(SystemExit, match="being written by another fed_quality process"):
            with fq.run_folder_held(folder):
                pass
    with fq.run_folder_held(folder):  # released once the first run is done
        pass
