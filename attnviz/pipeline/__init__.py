"""attnviz.pipeline."""
