"""Timing benchmarks (``poseharness bench ...``). ``evaluate``: the evaluator libraries, timed and cross-checked."""
