"""Running the Kubernetes CLIs (kubectl, helm, istioctl, kumactl, clusterctl).

Every call has a time limit, is logged as a redacted command line with its exit code and
duration, and runs in its own process group so a timeout ends the whole tree the call
started (and nothing else). Long-running commands (``kubectl port-forward``) are started
with :meth:`CommandRunner.start` and owned by the caller through the returned handle.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from meshbench.backend import StepFailed
from meshbench.kube.redact import format_command, redact_text

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
# How much of a failed command's output goes into the error message (the tail matters most).
_OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class CommandResult:
    command: str  # redacted, shell-quoted
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class CommandFailed(StepFailed):
    """A command that exited non-zero, could not start, or ran out of time."""

    def __init__(self, message: str, result: CommandResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class CommandTimedOut(CommandFailed):
    pass


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _OUTPUT_TAIL else "…" + text[-_OUTPUT_TAIL:]


def end_process_group(
    process: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float
) -> None:
    """End the process group this runner started for ``process`` (never anything by name):
    SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.wait(timeout=grace)


@dataclass(frozen=True)
class CommandRunner:
    """Runs CLI tools with a bounded time; bind a kubeconfig with :meth:`with_kubeconfig`.

    ``executables`` maps a tool name to the program to run (default: the tool name, found
    on PATH); ``secrets`` are values masked in every logged line and error message.
    """

    executables: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    default_timeout: float = DEFAULT_TIMEOUT

    def with_kubeconfig(self, kubeconfig_path: str) -> CommandRunner:
        """A runner whose commands see only this kubeconfig (every tool reads KUBECONFIG)."""
        return replace(self, env={**self.env, "KUBECONFIG": kubeconfig_path})

    def with_secrets(self, secrets: Iterable[str]) -> CommandRunner:
        return replace(self, secrets=(*self.secrets, *secrets))

    def argv(self, tool: str, args: Sequence[str]) -> list[str]:
        return [self.executables.get(tool, tool), *args]

    def render(self, tool: str, args: Sequence[str], secrets: Iterable[str] = ()) -> str:
        """The redacted command line as a plan shows it (the tool's plain name)."""
        return format_command([tool, *args], (*self.secrets, *secrets))

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment.update(self.env)
        return environment

    def _resolve(self, tool: str) -> str:
        program = self.executables.get(tool, tool)
        resolved = shutil.which(program, path=self._environment().get("PATH"))
        if resolved is None:
            raise CommandFailed(
                f"{tool}: program {program!r} not found on PATH; install it on the Airflow "
                f"workers (see docs/real-clusters.md)"
            )
        return resolved

    def run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        timeout: float | None = None,
        stdin: str | None = None,
        check: bool = True,
        secrets: Iterable[str] = (),
        secret_output: bool = False,
    ) -> CommandResult:
        """Run ``tool args`` to completion within ``timeout`` seconds.

        ``secret_output=True`` is for commands whose output is itself a secret (``istioctl
        create-remote-secret``, ``clusterctl get kubeconfig``): stdout is never logged and is
        returned to the caller unredacted, to be applied and forgotten, never returned from a
        task.
        """
        all_secrets = (*self.secrets, *secrets)
        command = format_command([tool, *args], all_secrets)
        limit = self.default_timeout if timeout is None else timeout
        program = self._resolve(tool)
        log.info("running: %s (time limit %gs)", command, limit)
        started = time.monotonic()
        process = subprocess.Popen(
            [program, *args],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._environment(),
            text=True,
            start_new_session=True,  # its own process group: a timeout ends its children too
        )
        try:
            stdout, stderr = process.communicate(input=stdin, timeout=limit)
        except subprocess.TimeoutExpired:
            end_process_group(process, grace=5.0)
            stdout, stderr = process.communicate()
            result = CommandResult(
                command,
                -1,
                redact_text(stdout or "", all_secrets),
                redact_text(stderr or "", all_secrets),
                time.monotonic() - started,
            )
            log.warning("timed out after %gs: %s", limit, command)
            raise CommandTimedOut(
                f"{command}: no result after {limit:g}s; stderr: {_tail(result.stderr)}", result
            ) from None
        except BaseException:
            # Cancelled (task killed): do not leave the tool running behind us.
            end_process_group(process, grace=5.0)
            raise
        seconds = time.monotonic() - started
        result = CommandResult(
            command,
            process.returncode,
            redact_text(stdout, all_secrets),
            redact_text(stderr, all_secrets),
            seconds,
        )
        log.info("exit %d after %.1fs: %s", result.returncode, seconds, command)
        if not secret_output and result.stdout.strip():
            log.debug("stdout of %s:\n%s", command, _tail(result.stdout))
        if check and result.returncode != 0:
            raise CommandFailed(
                f"{command}: exit {result.returncode}; stderr: {_tail(result.stderr)}", result
            )
        if secret_output:
            return replace(result, stdout=stdout)
        return result

    def start(
        self, tool: str, args: Sequence[str], *, secrets: Iterable[str] = ()
    ) -> subprocess.Popen[str]:
        """Start a long-running ``tool args`` in its own process group; stdout and stderr are
        merged into one text pipe. The caller owns the handle and ends it with
        :func:`end_process_group`."""
        command = format_command([tool, *args], (*self.secrets, *secrets))
        program = self._resolve(tool)
        log.info("starting: %s", command)
        return subprocess.Popen(
            [program, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            text=True,
            bufsize=1,
            start_new_session=True,
        )
