"""Pictures: training curves, image grids, kernels and feature maps."""
