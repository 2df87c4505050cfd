"""Solvers over task gradients: the min-norm point of their convex hull (MGDA, Pareto MTL) and EPO's LP."""
