"""What only local development uses: the synthetic data generator, DICOM writing, benchmarks. Never imported by a stage."""
