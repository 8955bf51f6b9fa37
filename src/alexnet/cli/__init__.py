"""The command line (`alexnet ...`): argparse subcommands, each a thin call into the library.

commands.py parses and dispatches and is the one place that catches the user's errors (one line,
exit status 2); args.py holds options several commands share; prepare.py and experiments.py
add their subcommands.
"""

from alexnet.cli.commands import main

__all__ = ["main"]
