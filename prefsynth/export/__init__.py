"""Export: the selected pairs as a TRL-ready Parquet dataset with provenance."""
