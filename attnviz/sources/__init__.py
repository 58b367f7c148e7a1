"""attnviz.sources."""
