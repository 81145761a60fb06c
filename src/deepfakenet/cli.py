"""How the command-line jobs end: one line for an expected refusal, a traceback for a bug.

Every entry point in ``training/`` and ``serving/`` runs its work through :func:`run_job`, so
cron, systemd and CI read the same documented exit codes from all of them:

====  ==========================================================================================
code  meaning
====  ==========================================================================================
0     done (for ``retrain``: promoted, kept the champion, or nothing to do)
1     unexpected error: the traceback is logged; nothing was promoted or moved
2     refused: an expected condition (no champion yet, no ``previous`` to roll back to, nothing
      registered, an empty or one-class data tree, an unknown key in a config file, a bad
      value); one line on stderr. A misspelt key on the command line is refused by Hydra
      itself, before the job runs: exit 1 with Hydra's message
75    another run holds the retraining lock (``EX_TEMPFAIL``): try again later
====  ==========================================================================================

A condition is *expected* when the library raises :class:`~deepfakenet.errors.JobRefused` (or a
subclass: a missing registry entry, a bad data tree, an invalid config) or
:class:`~deepfakenet.errors.JobLockedError`. Anything else, a registry server's 5xx included, is
unexpected: it keeps its traceback, because someone has to look at it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from enum import IntEnum
from typing import NoReturn, TypeVar

from deepfakenet.errors import JobLockedError, JobRefused

log = logging.getLogger(__name__)

T = TypeVar("T")


class ExitCode(IntEnum):
    """Process exit codes of every job (see the module docstring)."""

    OK = 0
    FAILED = 1
    REFUSED = 2
    LOCKED = 75


def run_job(name: str, job: Callable[[], T]) -> T:
    """Run ``job``; turn expected refusals into one line and an exit code.

    Call it inside the ``@hydra.main`` function: Hydra would otherwise print its own traceback
    for every exception, expected or not.

    Args:
        name: The job's name, the prefix of the one-line message (``retrain: ...``).
        job: The work; its return value is passed through when it succeeds.

    Returns:
        What ``job`` returned.
    """
    try:
        return job()
    except JobLockedError as err:
        _exit(name, err, ExitCode.LOCKED)
    except JobRefused as err:
        _exit(name, err, ExitCode.REFUSED)
    except Exception:
        log.exception("%s failed unexpectedly", name)
        sys.exit(ExitCode.FAILED)


def _exit(name: str, err: Exception, code: ExitCode) -> NoReturn:
    message = " ".join(str(err).split())  # one line, whatever the message held
    log.warning("%s: %s (exit %d)", name, message, int(code))
    print(f"{name}: {message}", file=sys.stderr)  # noqa: T201 - the job's one line for the user
    sys.exit(code)
