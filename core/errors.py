"""Errors that users see. Each carries a one-line message that says what is wrong and what to do.

The CLI prints `StylezooError`s to stderr as one line and exits with `exit_code`; any other exception
is a bug and shows a traceback only when STYLEZOO_DEBUG=1.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class StylezooError(Exception):
    """Base class for every error stylezoo reports to a user."""

    exit_code: int = 1


class UsageError(StylezooError):
    """The user asked for something that cannot work (bad name, key, value or composition)."""

    exit_code = 2


class UnknownComponentError(UsageError):
    """A component name that no loaded plugin registered."""


class ConfigError(UsageError):
    """An unknown config key, a value of the wrong type or out of range."""


class CompositionError(UsageError):
    """Components that cannot be used together."""


class DuplicateComponentError(StylezooError):
    """Two plugins registered the same name."""


class DataError(StylezooError):
    """Missing, empty or unreadable images."""


class CheckpointError(StylezooError):
    """A checkpoint or weight file that cannot be trusted or does not match what it declares."""


class WeightsError(StylezooError):
    """Pretrained weights that are missing, corrupt or cannot be fetched here."""


class UnknownWeightsError(WeightsError):
    """A weight-set name that registry.toml does not list (a bad name: exit 2, as for components)."""

    exit_code = 2


class PluginError(StylezooError):
    """A component that breaks its kind's contract: its config, its factory or what it returns."""


class TrainingDiverged(StylezooError):
    """Too many steps with a NaN or Inf loss or gradient."""


class PeerLost(StylezooError):
    """A distributed worker lost its connection to another worker, which most likely failed first."""


def did_you_mean(word: str, options: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix for an error, or '' when nothing is close.

    Names are compared after their `kind/` prefix, which every option of one kind shares ('gen/dcgn' would
    otherwise look close to 'gen/cin'); an option that starts with what was typed counts as close too.
    """
    opts = list(dict.fromkeys(options))
    short: dict[str, str] = {}
    for o in opts:
        short.setdefault(o.split("/", 1)[-1], o)
    typed = word.split("/", 1)[-1]
    close = [short[s] for s in short if len(typed) >= 3 and s.startswith(typed) and s != typed]
    close += [short[c] for c in difflib.get_close_matches(typed, list(short), n=n, cutoff=0.6)]
    if not close and len(typed) <= 3:  # short names: 'r3' is one letter from 'r1', a 0.5 ratio
        close += [short[c] for c in difflib.get_close_matches(typed, list(short), n=n, cutoff=0.5)
                  if len(c) <= 4]
    close = list(dict.fromkeys(close))[:n]  # (not the full names: a shared `loss/` alone looked close)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal (SIGINT: Ctrl-C, SIGTERM: a scheduler or `timeout`); the command exits
    with 128 + the signal's number, as a shell reports a process the signal ended (130, 143)."""

    def __init__(self, signum: int = 2) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
