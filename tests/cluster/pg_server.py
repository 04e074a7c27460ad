"""Whether a local PostgreSQL can be started here (scripts/local_postgres.sh, `make postgres`):
shared by tests/cluster/test_postgres.py and the README commands test."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_driver() -> str | None:
    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is None:
        return "no PostgreSQL driver for Python: pip install psycopg2-binary"
    return None


def no_server() -> str | None:
    """Why a local PostgreSQL cannot be started here (None: it can)."""
    if shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL server programs (initdb) not found: apt-get install postgresql"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run PostgreSQL as"
    return no_driver()
