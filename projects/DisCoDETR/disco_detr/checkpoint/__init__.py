from .checkpointer import DisCoCheckpointer

__all__ = ["DisCoCheckpointer"]
