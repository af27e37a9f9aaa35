"""Errors a user can act on, and URLs rendered without their password."""

from __future__ import annotations

import re
from pathlib import Path

# Fallback for strings SQLAlchemy cannot parse: hide whatever sits between "user:" and "@".
_USERINFO_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s]*")
_HIDDEN = "recmf-hidden-password"


class StoreError(RuntimeError):
    """A feature-store problem the user can fix: bad URL, unreachable server, bad schema name.

    ``str()`` is one paragraph: what went wrong, what was given (password hidden), what to do.
    """


class DataFormatError(ValueError):
    """A malformed input file: names the file, the 1-based line, the value and what was expected."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to log, print or save.

    Both places libpq takes a password from are hidden: ``user:password@`` and ``?password=``.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        if "password" not in parsed.query:
            return parsed.render_as_string(hide_password=True)
        hidden = parsed.update_query_dict({"password": _HIDDEN})  # "***" would be %-quoted
        return hidden.render_as_string(hide_password=True).replace(_HIDDEN, "***")
    except Exception:  # an unparsable URL still must not leak what looks like a password
        return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", str(url)))


def hide_secret(text: str, url: str | None) -> str:
    """``text`` with the password of ``url`` (if any) masked, for driver messages we pass on."""
    if not url:
        return text
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        passwords = [parsed.password, parsed.query.get("password")]
    except Exception:
        match = _USERINFO_PASSWORD.search(url)
        passwords = [match.group(0)[len(match.group(1)) : -1] if match else None]
        passwords += [m.group(0)[len(m.group(1)) :] for m in _QUERY_PASSWORD.finditer(url)]
    for password in passwords:
        for one in [password] if isinstance(password, str) else password or []:
            if one:
                text = text.replace(str(one), "***")
    return text
