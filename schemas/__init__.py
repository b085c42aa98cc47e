"""Package data: the phone inventories and the TFMD schema of the feature records."""
