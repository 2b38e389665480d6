"""The project's exception classes, in one place.

Every package raises these (or plain ValueError/TypeError with the offending value) so that the
CLI and the API can tell expected failures from bugs.
"""

from __future__ import annotations


class HybridrecError(Exception):
    """Base class of every expected failure in hybridrec."""


class DataError(HybridrecError, ValueError):
    """Input data is malformed: a missing column, an unreadable file, a bad value under --strict."""


class DownloadError(HybridrecError):
    """A dataset archive could not be fetched, or its checksum did not match."""


class UnknownIdError(HybridrecError, KeyError):
    """An external user or item id that is not in the vocabulary."""

    def __init__(self, kind: str, ids: list[str]) -> None:
        self.kind = kind
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:5])
        more = f" (and {len(self.ids) - 5} more)" if len(self.ids) > 5 else ""
        super().__init__(f"unknown {kind} id(s): {shown}{more}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class ModelDivergedError(HybridrecError, ArithmeticError):
    """Training produced non-finite factors (NaN or inf)."""


class NotFittedError(HybridrecError, AttributeError):
    """A model was used before fit() or load()."""


class BundleError(HybridrecError):
    """A model bundle is missing, incomplete or inconsistent with its manifest."""


class ListenError(HybridrecError, OSError):
    """The API cannot listen on the address it was given (in use, not local, not permitted)."""


class DeviceUnavailableError(HybridrecError, RuntimeError):
    """A fit asked for a device (a CUDA GPU) that the process running it does not have."""


class ClientRequiredError(HybridrecError, TypeError):
    """Work that runs on a Dask cluster was called without a client (cluster/ makes clients; the
    caller passes one: ``cluster.client.get_client()`` or its own ``distributed.Client``)."""
