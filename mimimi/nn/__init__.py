"""Models: complex layers, the complex ID-classification network, and the autoencoder baseline."""
from .autoencoder import AEConfig, DenseAE, Reconstruction, reconstruction_error
from .complex import (
    AttentionBlock,
    ComplexBatchNorm2d,
    ComplexBlock,
    ComplexConv2d,
    ComplexPReLU,
    ComplexToStacked,
    SquaredMagnitude,
    StackedToComplex,
    complex_conv2d,
    split_stacked,
)
from .network import ComplexNet, ComplexNetConfig, Embedded, Logits, backbone_freq, conv_padding, forward_flops, num_parameters

__all__ = [
    "AEConfig",
    "AttentionBlock",
    "ComplexBatchNorm2d",
    "ComplexBlock",
    "ComplexConv2d",
    "ComplexNet",
    "ComplexNetConfig",
    "ComplexPReLU",
    "ComplexToStacked",
    "DenseAE",
    "Embedded",
    "Logits",
    "backbone_freq",
    "Reconstruction",
    "SquaredMagnitude",
    "StackedToComplex",
    "complex_conv2d",
    "conv_padding",
    "forward_flops",
    "num_parameters",
    "reconstruction_error",
    "split_stacked",
]
