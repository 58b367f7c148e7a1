"""attnviz.cli."""
