"""Demand models: elasticity estimates, profit-optimal price recommendations, forecasts (pure maths, no I/O)."""
