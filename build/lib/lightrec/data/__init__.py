"""Data preparation: built-in datasets, splits, the disk cache and the RecSysDataModule."""
