"""Operator tooling on top of the runtime and the services: the ``neuralops`` command (cli,
entry), ``up`` (stack, local Prometheus, process supervision), the demo and the reports."""
