"""Storage and records: local or object-storage paths, the TFRecord/Example format of the feature
records, the sharded sink that writes them, and their TFMD schema."""
