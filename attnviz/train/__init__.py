"""attnviz.train."""
