from .conditional_detr import ConditionalDETR

__all__ = ["ConditionalDETR"]
