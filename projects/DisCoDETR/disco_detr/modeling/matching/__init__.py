from .hungarian import HungarianMatcher, focal_class_cost, solve_assignment
from .query_assignment import (
    QueryAssignment,
    assign_queries_to_proposals,
    fixed_group_assignment,
    queries_per_proposal,
)

__all__ = [
    "HungarianMatcher",
    "QueryAssignment",
    "assign_queries_to_proposals",
    "fixed_group_assignment",
    "focal_class_cost",
    "queries_per_proposal",
    "solve_assignment",
]
