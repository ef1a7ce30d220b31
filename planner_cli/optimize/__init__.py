"""The planner: candidates, latency tables, the inner MILP, the outer threshold search."""
