"""Small multi-layer perceptron used by DETR heads."""
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["MLP"]


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (none after the last).

    (..., input_dim) -> (..., output_dim).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
