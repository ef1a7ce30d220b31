"""cascadia-plan: an offline capacity planner for serving LLM model cascades."""

__version__ = "0.1.0"
