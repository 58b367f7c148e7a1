"""attnviz web app, Spaces-style: ``python app.py [--host] [--port] [--device] [--model SPEC ...] [--offline]``.

The app lives in the package (:mod:`attnviz.app`); ``attnviz serve`` starts the same.
"""

import sys

from attnviz.app import main

if __name__ == "__main__":
    sys.exit(main())
