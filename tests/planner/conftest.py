import warnings

warnings.filterwarnings("ignore", message=".*Solution may be inaccurate.*")
