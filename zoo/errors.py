"""The errors a user can act on, and how every `python -m zoo...` command reports a failure.

A `ZooError` is the user's to fix (a config, a file, the machine): its message is one line saying what is wrong and
what to do, printed as `<prog>: error [<code>]: <message>` with exit status 2. The code names the kind of failure
and never changes, so scripts can tell failures apart. Anything else is a bug in zoo: one line with exit status 1,
and the traceback only with `verbose=true`. Ctrl-C ends with exit status 130 after the atomic writers have removed
their temp files (zoo/files.py).
"""

from __future__ import annotations

import argparse
import errno


class ZooError(Exception):
    code = "error"
    details: tuple[str, ...] = ()  # lines printed under the error's own, one per problem


class ConfigError(ZooError, ValueError):
    """A config that cannot describe a buildable model or a valid run; names the field and the file."""

    code = "config"

    @classmethod
    def of(cls, problems: list[str]) -> ConfigError:
        """Every problem found at once: one as the error itself, several as a count with a line each."""
        if len(problems) == 1:
            return cls(problems[0])
        err = cls(f"{len(problems)} problems in the config; fix each of:")
        err.details = tuple(problems)
        return err


class VersionError(ZooError):
    """An installed package at another version than the one zoo's calls into its private API are written for."""

    code = "versions"


class CheckpointError(ZooError, ValueError):
    """A checkpoint that cannot be read: missing, truncated or corrupt files, or not the entry's architecture."""

    code = "checkpoint"


class MappingError(ZooError, ValueError):
    """Checkpoint tensors that do not fill our module: missing, extra, or of the wrong shape or dtype."""

    code = "mapping"


class GateFailed(ZooError):
    """Our model does not reproduce transformers: nothing may be exported from it."""

    code = "gate"


class CheckFailed(ZooError):
    """The exported flatbuffer is further from the PyTorch model than the quant recipe allows."""

    code = "check"


class BundleError(ZooError, ValueError):
    code = "bundle"


class InputError(ZooError, ValueError):
    """Bad input to a runtime: token ids, prompts, sampling values, a file that is not the expected flatbuffer."""

    code = "input"


class Arguments(argparse.ArgumentParser):
    """argparse for zoo's flag-style commands: a bad command line is an InputError, so `guarded` prints it in the
    one error form (`<command>: error [input]: ...`, exit 2) instead of argparse's usage and message."""

    def error(self, message: str):
        raise InputError(f"{message} (see {self.prog} --help)")


class EvalError(ZooError, ValueError):
    """Input the eval cannot measure (no text, too little, a flatbuffer that cannot be scored)."""

    code = "eval"


class EvalFailed(ZooError):
    """The flatbuffer's eval figures (perplexity, KL divergence ...) are past the recipe's bounds."""

    code = "eval_bounds"


class CacheError(ZooError):
    """An artifact or job cache entry that is broken, locked or not writable."""

    code = "cache"


class ResourceError(ZooError):
    """The machine cannot take the job: memory or disk, with the estimate and what is available."""

    code = "resources"


class StorageError(ZooError):
    """A file system refused a write (full, read-only, no permission)."""

    code = "storage"


STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large for the file size limit",
}
FIXES = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space", errno.EFBIG: "raise `ulimit -f`"}


def as_user_error(err: BaseException) -> ZooError | None:
    """The ZooError that `err` is for the user: itself, or a file system refusal (full disk, read-only folder)."""
    if isinstance(err, ZooError):
        return err
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        where = f" writing {err.filename}" if err.filename else ""
        fix = FIXES.get(err.errno, "choose a writable folder")
        return StorageError(
            f"{STORAGE_ERRNOS[err.errno]}{where}: {fix} and run again "
            "(finished files are kept; nothing half-written is left under a final name)"
        )
    if isinstance(err, MemoryError):
        return ResourceError("out of memory: use a smaller model or recipe, or free memory, and run again")
    return None


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def error_line(prog: str, err: BaseException) -> tuple[str, int]:
    """The line a command prints for `err`, and its exit status (2: the user's to fix, 1: a bug, 130: Ctrl-C)."""
    if isinstance(err, KeyboardInterrupt):
        return f"{prog}: interrupted [interrupted]: stopped by Ctrl-C; finished files are kept, temp files removed", 130
    user = as_user_error(err)
    if user is not None:
        details = "".join(f"\n  - {one_line(d)}" for d in user.details)
        return f"{prog}: error [{user.code}]: {one_line(user)}{details}", 2
    return (
        f"{prog}: internal error [bug]: {type(err).__name__}: {one_line(err)} (a bug in zoo; rerun with "
        "verbose=true for the traceback)"
    ), 1
