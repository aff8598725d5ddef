"""The error for an input its user can correct, which a web server answers as a client error.

MONAI Label serves a bundle by calling its transforms from inside a FastAPI request; an exception it does not know
becomes HTTP 500 "Internal Server Error", and the clear message stays in the server log. Starlette (FastAPI's
framework) answers any exception that is one of its ``HTTPException`` with that status and the message as the body,
so :class:`InputError` is one when Starlette is installed (it comes with MONAI Label): the same one line a command-line
user reads reaches a MONAI Label client as ``{"detail": "..."}`` with status 422 (404 for an input that is not there).
"""

from __future__ import annotations

try:
    from starlette.exceptions import HTTPException as _ClientErrorBase
except ImportError:  # no web server installed: a plain error
    _ClientErrorBase = Exception

__all__ = ["InputError"]

#: "Unprocessable Content": the request was understood, the input cannot be segmented as it is
UNPROCESSABLE = 422
NOT_FOUND = 404


class InputError(ValueError, _ClientErrorBase):
    """An input (a scan, a prompt, a request parameter) that cannot be used as given; the message names the input
    and the problem on one line.

    Args:
        message: that line.
        status_code: the HTTP status a server answers it with (422, or 404 for an input that does not exist).
    """

    def __init__(self, message: str, status_code: int = UNPROCESSABLE) -> None:
        Exception.__init__(self, message)
        # the attributes Starlette's handler reads (its own __init__ would also reset the message to the status text)
        self.status_code, self.detail, self.headers = status_code, message, None

    def __str__(self) -> str:
        return self.detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"

    def __reduce__(self):  # picklable across DataLoader workers, with its status
        return type(self), (self.detail, self.status_code)
