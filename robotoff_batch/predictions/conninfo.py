"""Connection strings described without their password; which errors are authentication."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict


def describe_conninfo(conninfo: str) -> str:
    """Where ``conninfo`` points (host or socket, port, database, user), never the password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "an unparsable connection string"
    host = params.get("host") or params.get("hostaddr") or "the default socket"
    parts = [f"host={host}"]
    for key in ("port", "dbname", "user"):
        if params.get(key):
            parts.append(f"{key}={params[key]}")
    return " ".join(parts)


def password_of(conninfo: str) -> str | None:
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        return None
    return str(password) if password else None


def is_auth_error(exc: psycopg.Error) -> bool:
    """Wrong password, unknown role, no pg_hba entry (SQLSTATE class 28) or no permission."""
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("28") or state == "42501":
        return True
    text = str(exc)
    return (
        "authentication failed" in text
        or "no pg_hba.conf entry" in text
        or ('role "' in text and "does not exist" in text)
    )


def conninfo_problem(conninfo: str) -> str | None:
    """Why ``conninfo`` cannot name a server at all (it does not parse, a port is not a
    number), or None; never quotes it (it may hold the password)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return (
            "not a valid connection string (write it postgresql://USER:PASSWORD@HOST:PORT/"
            "DBNAME, or as key=value pairs)"
        )
    for port in str(params.get("port") or "").split(","):
        if port and not port.strip().isdigit():
            return f"its port {port.strip()!r} is not a number"
    return None
