"""Neural-network building blocks: Module, Parameter, the layers, and their functions.

    import tinygen.nn as nn
    import tinygen.nn.functional as F

    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    loss = F.cross_entropy(model(x), labels)

The names, arguments, defaults and state_dict keys are PyTorch's.
"""

from tinygen.nn import functional, init
from tinygen.nn.layers import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Tanh,
    Unflatten,
)
from tinygen.nn.module import IncompatibleKeys, Module, Parameter, Sequential, functional_call

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "Dropout",
    "Flatten",
    "IncompatibleKeys",
    "LeakyReLU",
    "Linear",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "Unflatten",
    "functional",
    "functional_call",
    "init",
]
