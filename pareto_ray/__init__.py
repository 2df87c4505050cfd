"""pareto-ray: Pareto Front Learning on Ray."""

__version__ = "0.1.0"
