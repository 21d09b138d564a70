"""NeuralOps gRPC servers: RunHistory, Insight and Registry, and their shared plumbing."""
