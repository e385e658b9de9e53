"""Ways to look inside a model, and helpers: each runs from the repository root as `python -m tools.<name>`."""
