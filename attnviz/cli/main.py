"""The ``attnviz`` command line.

The parser is built from the verbs, one module each in :mod:`attnviz.cli` (shared model options: ``options``).

attnviz list                               the registered attention types, their placement and paper
attnviz info --arch resnet50 [--attention cbam] [--size 224]
                                           parameters vs the plain network, and every map it captures
attnviz render IMAGE_OR_DIR... [--model SPEC] [--attention cbam] --out DIR [--weights W] [--labels L] [--offline]
                                           every map of every image, as PNG, .npy and result.json
attnviz inspect --model SPEC [--weights W] [--size N]
                                           every attention site found in a network, and what was skipped
attnviz train --data DIR --attention cbam --out CKPT   fine-tune on an image folder (attnviz.train)
attnviz eval --data SCENES                 accuracy and localisation of the demo checkpoints
attnviz compare IMG [IMG_B] [--attention A [B]] [--model M [M_B]] --out DIR
                                           two settings side by side (attnviz.comparison)
attnviz stats DATA --out DIR [--masks M | --boxes B]
                                           dataset statistics, under torchrun too (attnviz.stats)
attnviz serve [--host] [--port] [--model SPEC --weights W --labels L] [--offline]
                                           the web app (attnviz.app)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .compare import add_compare_parser
from .eval import add_eval_parser
from .info import add_info_parser, add_list_parser
from .inspect import add_inspect_parser
from .render import add_render_parser
from .serve import add_serve_parser
from .stats import add_stats_parser
from .train import add_train_parser

__all__ = ["main"]

#: Every verb, in the order ``attnviz --help`` lists them.
VERBS = (
    add_list_parser,
    add_info_parser,
    add_render_parser,
    add_inspect_parser,
    add_train_parser,
    add_eval_parser,
    add_compare_parser,
    add_stats_parser,
    add_serve_parser,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attnviz`` console script."""
    parser = argparse.ArgumentParser(prog="attnviz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser in VERBS:
        add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's code for SIGINT
        print(f"attnviz {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
