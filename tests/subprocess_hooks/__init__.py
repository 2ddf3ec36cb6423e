"""Hooks for the scripts the tests launch as subprocesses (torchrun workers): put this folder on PYTHONPATH and
`sitecustomize` records file writes and redirects the Hub API, as the environment variables it reads ask."""
