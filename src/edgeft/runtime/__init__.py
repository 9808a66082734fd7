"""Collaborative runtime: executes a plan over OS processes with torch.distributed.

launcher (spawns and supervises one process per device/server, recovers from lost devices) ->
worker (one process: group, emulation, one strategy) -> strategies (hybrid, deft, split).
"""
