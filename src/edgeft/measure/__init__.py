"""Measurement of real hardware: per-block profiles for the planner, host calibration for the runtime."""
