"""The pipeline as a graph of kernels: planned, pushed and watched on Kaggle (graph, client, state,
push, cli), or run locally with papermill in the same order (local)."""
