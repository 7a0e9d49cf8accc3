"""Image IO, datasets and grids. Images enter and leave here; inside kuosan they are tensors in [-1, 1]."""

from kuosan.data.folder import ArrayDataset, Example, ImageFolder, builtin_digits_arrays, open_dataset
from kuosan.data.io import (
    load_image,
    make_grid,
    pil_to_tensor,
    save_grid,
    save_image,
    tensor_to_pil,
    tensor_to_uint8,
)

__all__ = ["ArrayDataset", "Example", "ImageFolder", "builtin_digits_arrays", "open_dataset", "load_image",
           "make_grid", "pil_to_tensor", "save_grid", "save_image", "tensor_to_pil", "tensor_to_uint8"]
