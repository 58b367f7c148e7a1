"""attnviz web app entry point: ``python app.py [--host 127.0.0.1] [--port 7860] [--device cpu|cuda]``.

The browser app (upload an image, pick an attention type, see its maps) is being built; until it lands this
entry point says so plainly and points to what works today.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="app.py", description="attnviz web app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.parse_args(argv)
    import attnviz

    print(
        "attnviz web app: coming soon (it is not served yet).\n"
        f"The library works today: attention types {', '.join(attnviz.list_attentions())}.\n"
        "Try:  attnviz list   |   attnviz info --arch resnet50 --attention cbam"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
