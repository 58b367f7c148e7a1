"""attnviz.capture."""
