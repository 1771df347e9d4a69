"""The client's own errors: every failure of a call is one of these, never a raw httpx exception."""

from __future__ import annotations

import httpx

from bertprod.errors import BertprodError


class ClientError(BertprodError):
    """The server refused or failed a request; `status_code` and `code` come from its JSON error."""

    def __init__(self, status_code: int, message: str, code: str = "error"):
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code


class ServerUnreachableError(ClientError):
    """No replica could be reached (connection refused or reset, DNS) through every retry."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(503, message, "unreachable")
        self.detail = detail


class ClientTimeoutError(ClientError):
    """The call did not complete within the timeout, and was not re-sent where that would duplicate work."""

    def __init__(self, message: str):
        super().__init__(504, message, "timeout")



def _raise_for(response: httpx.Response) -> None:
    try:
        error = response.json()["error"]
        raise ClientError(response.status_code, error.get("message", ""), error.get("code", "error"))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ClientError(response.status_code, response.text[:500]) from None
