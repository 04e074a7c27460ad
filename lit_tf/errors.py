"""User-input errors, and how the command-line entry points show them.

`LitTfError` marks a problem with what the user gave us (a config key or value, a data file, a
checkpoint, a search space): its message names the key/file/line and what was expected. The
CLIs print it as one `error: ...` line on stderr (plus a `hint: ...` line when the error carries
one) and exit with status 2; anything else is a bug and keeps its traceback. Set
`LIT_TF_TRACEBACK=1` (or Hydra's `HYDRA_FULL_ERROR=1`) to see the traceback of user errors too.

This module imports nothing from lit_tf or third parties, so every layer (models included) may
raise these errors.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_USER_ERROR = 2  # as argparse: the command line (or what it points at) is wrong
TRACEBACK_ENV = ("LIT_TF_TRACEBACK", "HYDRA_FULL_ERROR")


class LitTfError(ValueError):
    """Bad user input; the message says which key/file/line and what was expected.

    `hint` (optional) is a next step worth printing under the message ("train once first ...").
    A ValueError, so callers that already catch ValueError keep working.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class CheckpointError(LitTfError):
    """A file given as a checkpoint (`init_from`, `ckpt_path`, `ckpt=`) that is not a usable lit_tf one."""


def traceback_requested() -> bool:
    """True when LIT_TF_TRACEBACK or HYDRA_FULL_ERROR is set to a true value."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in TRACEBACK_ENV)


def format_user_error(err: BaseException) -> str:
    """`error: <message>` (one line for one problem) and, if the error has one, `hint: <hint>`."""
    text = f"error: {str(err).strip() or type(err).__name__}"
    hint = getattr(err, "hint", None)
    return f"{text}\nhint: {hint}" if hint else text


@contextmanager
def user_errors(enabled: bool = True) -> Iterator[None]:
    """Turn a LitTfError raised inside into `error: ...` on stderr and exit status 2.

    Pass `enabled=False` where exceptions must propagate (a sweep trial: the sweeper records the
    failure with its reason). Other exceptions always propagate with their traceback.
    """
    try:
        yield
    except LitTfError as e:
        if not enabled or traceback_requested():
            raise
        sys.stdout.flush()
        print(format_user_error(e), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
