"""Keypoint grouping: turning per-type keypoint candidates and grouping cues into persons."""
from .greedy import SCORE_MODES, LimbCandidates, candidate_limbs, group

__all__ = ["SCORE_MODES", "LimbCandidates", "candidate_limbs", "group"]
