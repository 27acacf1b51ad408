from .hungarian import HungarianMatcher, focal_class_cost, solve_assignment

__all__ = ["HungarianMatcher", "focal_class_cost", "solve_assignment"]
