"""ACME VMM: the team's DMA-mapping policies and VM configurations."""
