"""The ``irem`` command. Input errors end with one line ``error: ...`` on stderr and exit status 2,
leaving no output file; log messages go to stderr and, with ``--log FILE``, to that file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from irem import __version__
from irem.cli import baseline, mask, metrics, reconstruct, sample, simulate
from irem.cli.common import EXIT_INPUT, FMT, Parser, add_output_options, log_to_files, setup_logging
from irem.errors import InputError

#: Sub-commands defined here; for these the other modules are not imported (a faster start).
BUILTIN_COMMANDS = frozenset({"simulate", "reconstruct", "baseline", "sample", "metrics"})


def build_parser(external: bool = True) -> argparse.ArgumentParser:
    """The ``irem`` command's parser (``external``: with ``dataset`` and ``report``)."""
    parser = Parser(
        prog="irem",
        description="Multi-stack MRI super-resolution with implicit neural representations (IREM, "
        "Wu et al. 2021) and its baselines, on NIfTI files in world coordinates.",
        formatter_class=FMT,
    )
    parser.add_argument("--version", action="version", version=f"irem-bench {__version__}")
    add_output_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (simulate, reconstruct, baseline, mask, sample, metrics):
        module.add_parser(sub)
    if external:  # their modules import more (pandas, matplotlib, the cohort)
        from irem.cli.dataset import add_dataset_parser
        from irem.cli.report import add_report_parser

        add_dataset_parser(sub)
        add_report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``irem`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    words, command = iter(argv), None  # the first word that is no option or --log's value
    for word in words:
        if word == "--log":
            next(words, None)
        elif not word.startswith("-"):
            command = word
            break
    args = build_parser(external=command not in BUILTIN_COMMANDS).parse_args(argv)
    try:
        setup_logging(args.verbose, args.quiet, args.log)
        args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        log_to_files(f"error: {exc}")
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
