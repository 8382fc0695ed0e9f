"""Data (thesis 6.3.1): loaders for the formats users bring, the synthetic dataset, batching."""
