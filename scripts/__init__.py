"""Operator commands: build an index, query it, evaluate it (installed as lookalike-* commands)."""
