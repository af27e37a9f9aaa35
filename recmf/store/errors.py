"""Errors a user can act on, and URLs rendered without their password."""

from __future__ import annotations

import re

# Fallbacks for strings SQLAlchemy cannot parse (or parses into a host holding "@"): they err
# on the side of hiding too much, since the string is only shown to say it is wrong.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?=/)")  # "postgresql:" before a slash
_BAD_PORT = re.compile(r":(?!\d*(?:[/?]|$))[^/?]*")  # ":secret" where a port would be
_QUERY_PASSWORD = re.compile(r"(\bpassword=)[^&\s]*")  # ?password= and libpq's password=
_HIDDEN = "recmf-hidden-password"


class StoreError(RuntimeError):
    """A feature-store problem the user can fix: bad URL, unreachable server, bad schema name.

    ``str()`` is one paragraph: what went wrong, what was given (password hidden), what to do.
    """


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to log, print or save.

    Both places libpq takes a password from are hidden: ``user:password@`` and ``?password=``.
    A string SQLAlchemy cannot parse (``postgresql//bob:pw@host/db``, ``bob:pw@host``) or parses
    into a host holding ``@`` (an unescaped ``@`` in the password) is masked by pattern instead.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        if "@" in (parsed.host or ""):
            return _mask_by_pattern(str(url))
        if "password" not in parsed.query:
            return parsed.render_as_string(hide_password=True)
        hidden = parsed.update_query_dict({"password": _HIDDEN})  # "***" would be %-quoted
        return hidden.render_as_string(hide_password=True).replace(_HIDDEN, "***")
    except Exception:  # an unparsable URL still must not leak what looks like a password
        return _mask_by_pattern(str(url))


def hide_secret(text: str, url: str | None) -> str:
    """``text`` with the password of ``url`` (if any) masked, for driver messages we pass on."""
    if not url:
        return text
    from urllib.parse import unquote

    from sqlalchemy.engine import make_url

    passwords: list[str | None] = []
    try:
        parsed = make_url(url)
        for one in (parsed.password, parsed.query.get("password")):
            passwords += [one] if isinstance(one, str) or one is None else list(one)
    except Exception:
        parsed = None
    span = _password_span(url) if parsed is None or "@" in (parsed.host or "") else None
    if span is not None:  # as typed, and %-decoded as the driver would see it
        passwords += [url[span[0] : span[1]], unquote(url[span[0] : span[1]])]
    passwords += [m.group(0)[len(m.group(1)) :] for m in _QUERY_PASSWORD.finditer(url)]
    for one in sorted({str(p) for p in passwords if p}, key=len, reverse=True):
        text = text.replace(one, "***")
    return text


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the password of a URL-like string lies, read loosely: after the first ``:`` of
    what precedes the last ``@`` (a leading ``scheme:`` aside); without ``@``, a ``:`` followed
    by something other than a port number. None when no password can be told."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    at = url.rfind("@")
    if at >= start:
        colon = url.find(":", start, at)
        return (colon + 1, at) if colon >= 0 else None
    bad_port = _BAD_PORT.search(url, start)
    return (bad_port.start() + 1, bad_port.end()) if bad_port else None


def _mask_by_pattern(url: str) -> str:
    span = _password_span(url)
    if span is not None and span[1] > span[0]:
        url = url[: span[0]] + "***" + url[span[1] :]
    return _QUERY_PASSWORD.sub(r"\1***", url)
