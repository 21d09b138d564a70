"""Numbered SQL migrations, shipped as package data (see neuralops.servers.runtime.migrate)."""
