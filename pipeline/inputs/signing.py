"""Signing asset hrefs for a catalog whose storage wants a short-lived token: Planetary Computer.

Planetary Computer keeps its Sentinel-2 assets in Azure Blob Storage, readable only with a
shared access signature (SAS) token. Its token API answers ``GET <endpoint>/<collection>``
with ``{"msft:expiry": <RFC 3339 time>, "token": <query string>}``, and an href is signed by
appending that token as its query string. A token lives about 45 minutes (some arrive already
expired), far less than a continental run, so signing an ItemCollection up front fails any run
longer than that. Hrefs therefore stay unsigned everywhere (the plan, the recipe, the product,
every message) and each worker signs an asset just before it opens it: tokens are cached per
collection in each worker process and renewed before they expire, and a read refused with one
token is tried once more with a fresh one (a refusal after that is a read error of the tile,
which the run retries).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from stackstac.rio_reader import AutoParallelRioReader

from pipeline.errors import UserError
from pipeline.redact import redact

#: ``--sign`` values: guess from the catalog's URL, never sign, or sign for Planetary Computer.
AUTO, NONE, PLANETARY_COMPUTER = "auto", "none", "planetary-computer"
SIGN_CHOICES = (AUTO, PLANETARY_COMPUTER, NONE)
#: The host of Planetary Computer's STAC API, by which ``--sign auto`` recognises it.
PC_HOST = "planetarycomputer.microsoft.com"
#: Planetary Computer's token API; ``PC_SDK_SAS_URL`` overrides it, as for PC's own SDK.
PC_TOKEN_API = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
TOKEN_API_ENV = "PC_SDK_SAS_URL"
#: An optional API key (higher rate limits), read on the worker where the token is asked for.
SUBSCRIPTION_KEY_ENV = "PC_SDK_SUBSCRIPTION_KEY"
#: Seconds before its expiry that a token is renewed (at the latest half-way through the life
#: it had when it came), so that an asset opened with it is read before it runs out.
RENEW_BEFORE = 300.0
#: Seconds to wait for the token API.
TOKEN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Token:
    value: str
    renew_at: float  # time.time() after which a new one is asked for


@dataclass(frozen=True)
class Signer:
    """Signs hrefs of ``collection`` with tokens from the token API at ``endpoint``; holds no
    token itself, so it pickles to workers without any secret."""

    collection: str
    endpoint: str = PC_TOKEN_API

    def sign(self, href: str, refused: str | None = None) -> tuple[str, str]:
        """``href`` with a valid token as its query, and that token. ``refused`` is a token a
        server just refused: never given again, whatever its stated expiry."""
        token = _token(self, refused)
        return f"{href}{'&' if '?' in href else '?'}{token}", token


_TOKENS: dict[Signer, Token] = {}
_TOKENS_LOCK = threading.Lock()


def _token(signer: Signer, refused: str | None) -> str:
    """The cached token of the signer's collection, or a new one when it is due for renewal
    or was refused; one request at a time per process, so threads never ask all at once."""
    with _TOKENS_LOCK:
        cached = _TOKENS.get(signer)
        if cached is None or cached.value == refused or time.time() >= cached.renew_at:
            cached = _TOKENS[signer] = _fetch(signer)
        return cached.value


def _fetch(signer: Signer) -> Token:
    url = f"{signer.endpoint.rstrip('/')}/{signer.collection}"
    key = os.environ.get(SUBSCRIPTION_KEY_ENV)
    request = urllib.request.Request(url, headers={"Ocp-Apim-Subscription-Key": key} if key else {})
    asked = time.time()
    try:
        with urllib.request.urlopen(request, timeout=TOKEN_TIMEOUT) as answer:
            doc = json.load(answer)
        value = doc["token"]
        expires = datetime.fromisoformat(doc["msft:expiry"]).timestamp()
    except urllib.error.HTTPError as err:
        raise OSError(
            f"the token API refused a token for {signer.collection}: HTTP {err.code}"
        ) from None
    except (KeyError, TypeError, ValueError):
        raise OSError(f"the token API sent no token for {signer.collection}") from None
    life = expires - asked
    return Token(value, expires - min(RENEW_BEFORE, life / 2))


def signer_for(stac: str | None, collection: str | None, sign: str = AUTO) -> Signer | None:
    """The signer that reads of ``stac``'s assets need (``sign``: one of SIGN_CHOICES), or
    None; UserError when signing is asked for without a collection to ask tokens for."""
    if sign == NONE or (sign == AUTO and not is_planetary_computer(stac)):
        return None
    if not collection:
        raise UserError(
            f"--sign {PLANETARY_COMPUTER} needs --collection (its tokens are per "
            "collection), e.g. --collection sentinel-2-l2a"
        )
    return Signer(collection, os.environ.get(TOKEN_API_ENV) or PC_TOKEN_API)


def is_planetary_computer(stac: str | None) -> bool:
    """Whether ``stac`` is a URL of Planetary Computer's STAC API."""
    return bool(stac) and urlparse(stac).hostname == PC_HOST


def reader_for(signer: Signer | None) -> Any:
    """The stackstac reader class for ``signer``: stackstac's own when there is none."""
    if signer is None:
        return AutoParallelRioReader
    return _ReaderFactory(signer)


@dataclass(frozen=True)
class _ReaderFactory:
    """What stackstac calls to make each asset's reader (it takes any callable)."""

    signer: Signer

    def __call__(self, **options: Any) -> SignedReader:
        return SignedReader(signer=self.signer, **options)


class SignedReader(AutoParallelRioReader):
    """stackstac's reader, opening its asset with a signed href that it never keeps: the
    unsigned one is what its messages and its pickled state hold. A refused open or read is
    tried once more with a fresh token; every error it raises names the asset unsigned."""

    def __init__(self, *, signer: Signer, **options: Any) -> None:
        # A failure must never become no-data: that would also print the signed href.
        super().__init__(**{**options, "errors_as_nodata": ()})
        self.signer = signer
        self._token: str | None = None  # the token of the last open

    def _open(self) -> Any:
        try:
            return self._signed_open(None)
        except Exception:
            return self._signed_open(self._token)

    def _signed_open(self, refused: str | None) -> Any:
        href = self.url
        try:
            self.url, self._token = self.signer.sign(href, refused)
            return super()._open()
        except Exception as err:
            raise RuntimeError(redact(str(err))) from None
        finally:
            self.url = href

    def read(self, window: Any, **kwargs: Any) -> Any:
        try:
            return super().read(window, **kwargs)
        except Exception:
            if self._dataset is None:  # the open failed, a fresh token tried already
                raise
        # the token may have run out since the open: open afresh and read once more
        self.close()
        try:
            with self._dataset_lock:
                self._dataset = self._signed_open(self._token)
            return super().read(window, **kwargs)
        except Exception as err:
            raise RuntimeError(redact(str(err))) from None

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "signer": self.signer}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)
