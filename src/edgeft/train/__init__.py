"""Single-device training: objective, loop, meters, run directory, evaluation."""
