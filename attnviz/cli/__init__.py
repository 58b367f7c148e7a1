"""attnviz's command line, one module per verb: ``info`` (list, info), ``render``, ``inspect``, ``stats``,
``compare``, ``train``, ``eval``, ``serve``; ``options`` (the model options they share); ``main`` (the parser and
the entry point, :func:`attnviz.cli.main.main`). Nothing in the library imports this package."""
