"""The one error family of simsiam.

Library code raises a :class:`SimSiamError` whose message names the parameter,
file or folder at fault; the command line prints it as one line and exits with
status 2. A :class:`ConfigError` also carries the dotted config key it is about
(``optim.base_lr``), so the CLI can name the option as the user typed it: the
flag (``--lr``) or the key in their config file.

>>> str(ConfigError("must be positive, got -1", key="optim.base_lr"))
'optim.base_lr: must be positive, got -1'
"""

from __future__ import annotations


class SimSiamError(Exception):
    """Bad input or a run that cannot go on; the message names what is at fault."""


class ConfigError(SimSiamError, ValueError):
    """A bad option or config value. ``key`` is the dotted config key, when the error is about one."""

    def __init__(self, message: str, key: str | None = None):
        self.key, self.reason = key, message
        super().__init__(f"{key}: {message}" if key else message)

    def named(self, name: str) -> ConfigError:
        """The same error, naming the option as ``name`` (a flag, or a key in a config file)."""
        return ConfigError(f"{name}: {self.reason}")


class DataError(SimSiamError, ValueError):
    """Bad input data; the message names the file or folder at fault."""


class CheckpointError(SimSiamError):
    """A checkpoint cannot be written or read; the message names the file."""


class RunError(SimSiamError):
    """A run folder problem, or options that do not fit the data or the machine."""


class NonFiniteLossError(SimSiamError):
    """The loss became NaN or infinite."""


class BackboneChangedError(SimSiamError):
    """A frozen backbone changed during evaluation: a weight or a BN running statistic moved."""


class TrainingInterrupted(Exception):
    """Training stopped on Ctrl-C (SIGINT); the message says what was saved and how to resume."""
