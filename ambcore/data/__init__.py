"""Data (thesis 6.3.1): loaders for the formats users bring, the synthetic dataset, batching."""

from ambcore.data.loaders import load_dataset
from ambcore.data.synthetic import make_synthetic_dataset
from ambcore.data.types import Batch, MultimodalDataset, Split

__all__ = ["Batch", "MultimodalDataset", "Split", "load_dataset", "make_synthetic_dataset"]
