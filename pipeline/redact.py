"""URLs as the product and its messages show them: without user-info, query or fragment.

A catalog's root URL, a signed asset URL or an output location may carry credentials (``user:
password@``, ``?token=...``, ``&sig=...``, ``X-Amz-Signature=...``). Whatever the pipeline
writes into a product (attributes, STAC files, markers, failure records) or prints passes through
:func:`redact`, so that a product can be shared and a log pasted without leaking them. Scheme,
host and path are kept: enough to tell which server and file a message is about.
"""

from __future__ import annotations

import re

#: A URL inside any text: scheme, optional user-info (up to the last ``@`` before the path),
#: host and path, then an optional query or fragment up to a blank, a quote or the end (a
#: sentence's punctuation right before those is left to the sentence).
_URL = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)"
    r"(?P<userinfo>[^/\s'\"<>]*@)?"
    r"(?P<rest>[^?#\s'\"<>]*)"
    r"(?P<query>[?#][^\s'\"<>]*?(?=[.,;:)\]]*(?:[\s'\"<>]|$)))?"
)


def redact(text: str) -> str:
    """``text`` with the user-info, query and fragment of every URL in it removed.

    >>> redact("cannot reach http://me:pw@host:8080/v1/?token=abc: timed out")
    'cannot reach http://host:8080/v1/: timed out'
    """
    return _URL.sub(lambda m: m["scheme"] + m["rest"], text)
