"""Federated fine-tuning on Flower: FedIT (LoRA + FedAvg), FedKSeed(-Pro) (K seeds + scalar gradients),
FwdLLM-style forward gradients; partitions, wire accounting, Flower's SecAgg+ and DP mods, and helpers to
run the same apps in Flower's simulation engine, in one process without Ray (`local_grid.run_in_process`),
or as a real SuperLink + SuperNodes deployment.

Import the pieces from their modules (`edgeft.federated.simulation.run_federated`, ...): importing this
package does not import Flower.
"""
