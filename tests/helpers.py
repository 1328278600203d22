"""Small builders shared by several test modules."""

import torch
from torch import nn

from nbgraft import grafting as G


def identity_map(c: int) -> G.ChannelMap:
    """A c -> c adapter that passes its input through unchanged."""
    m = G.ChannelMap(c, c)
    G.set_map(m, (torch.eye(c), None))
    return m


def randomise_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine parameters away from their defaults, so folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()
