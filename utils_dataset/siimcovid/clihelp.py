"""One argparse help style for every command: each option's default shown where it tells something."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after an option's help, except where it says nothing: no default (None),
    an off switch (False), or a help text that already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        # identity, not ==: a default of 0 (a seed) is worth showing, False (a switch) is not
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)) or "default" in help_:
            return help_
        return super()._get_help_string(action)
