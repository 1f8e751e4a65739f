"""Tracking-plan tools: plan files in either shape, offline checks of samples, drafting a plan
from observed events. The enforcement itself is a pipeline stage (``router.pipeline.plans``)."""
