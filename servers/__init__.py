"""NeuralOps gRPC servers: one package per service (registry, runhistory, insight, gateway),
the shared server runtime (runtime/) and the operator tooling (tooling/)."""
