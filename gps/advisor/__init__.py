"""The MoE-GPS advisor: strategies priced end-to-end on held-out batches, recommendation,
guidelines (accuracy x overhead frontier) and paper comparisons. Entry point: ``advise``."""

from gps.advisor.advise import advise

__all__ = ["advise"]
