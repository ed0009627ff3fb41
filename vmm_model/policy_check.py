"""User policies run behind a guard: a policy that raises or returns something
other than a ``DmaResult`` stops the run with a `PolicyError` naming the
policy, the section and what it did (one line; the CLI prints it and exits 2),
and whatever it prints goes to stderr so ``--json`` output stays valid.

Built-in policies (vmm_model/policy.py) are not wrapped.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from backends.base import DmaResult
from backends.errors import UsageError


class PolicyError(UsageError):
    """A user policy raised, or returned something other than a DmaResult."""


def _short(value: Any, limit: int = 80) -> str:
    """One line: ``repr(value)`` (``str`` for exceptions), whitespace folded, cut."""
    text = " ".join((str(value) if isinstance(value, BaseException) else repr(value)).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def checked(name: str, fn: Any) -> Any:
    """``fn`` wrapped so that its misbehaviour is a PolicyError naming ``name``."""

    def policy(bcontainer: Any, iova: int, size: int, vaddr: int, readonly: bool,
               mr: Any) -> DmaResult:
        where = f"policy {name}, section {getattr(mr, 'name', '?')} iova 0x{iova:x}"
        try:
            with contextlib.redirect_stdout(sys.stderr):
                ret = fn(bcontainer, iova, size, vaddr, readonly, mr)
        except PolicyError:
            raise
        except Exception as e:
            raise PolicyError(f"the policy raised {type(e).__name__}: {_short(e, 120)}",
                              where=where) from e
        if not isinstance(ret, DmaResult):
            raise PolicyError(
                f"the policy returned {_short(ret)} ({type(ret).__name__}), not the DmaResult "
                "of bcontainer.dma_map() or bcontainer.dma_map_file()", where=where)
        return ret

    policy.__wrapped__ = fn            # type: ignore[attr-defined]
    policy.__name__ = getattr(fn, "__name__", name)
    policy.__doc__ = getattr(fn, "__doc__", None)
    return policy
