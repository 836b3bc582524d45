"""The CLI runner: time limits that end the whole process tree, redacted logs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from meshbench.kube.redact import MASK, format_command, redact_args, redact_text
from meshbench.kube.runner import CommandFailed, CommandRunner, CommandTimedOut


def test_secret_looking_arguments_are_masked():
    args = [
        "--token=abc123",
        "--password",
        "hunter22",
        "--set",
        "controlPlane.secrets.adminPassword=pa55word",
        "--server=https://admin:letmein@10.0.0.1:6443",
        "--namespace",
        "istio-system",
    ]
    redacted = redact_args(args)
    assert redacted == [
        f"--token={MASK}",
        "--password",
        MASK,
        "--set",
        f"controlPlane.secrets.adminPassword={MASK}",
        f"--server=https://{MASK}@10.0.0.1:6443",
        "--namespace",
        "istio-system",
    ]
    assert "pa55word" not in format_command(["helm", *args])


def test_known_secret_values_and_inline_credentials_are_masked_in_text():
    text = (
        'Authorization: Bearer eyJhbGciOi.x.y\ntoken: "abcd1234"\nclient-key-data: QUJD\nmy-value'
    )
    redacted = redact_text(text, secrets=["my-value"])
    assert "eyJhbGciOi" not in redacted and "abcd1234" not in redacted
    assert "QUJD" not in redacted and "my-value" not in redacted


def test_run_logs_a_redacted_command_line_and_returns_output(caplog):
    runner = CommandRunner(secrets=("s3cret-value",))
    with caplog.at_level(logging.INFO, logger="meshbench.kube.runner"):
        result = runner.run("sh", ["-c", "echo out; echo s3cret-value >&2", "--token=zzz"])
    assert result.returncode == 0 and result.stdout == "out\n"
    assert "s3cret-value" not in result.stderr
    logged = caplog.text
    assert "--token=REDACTED" in logged and "zzz" not in logged and "s3cret-value" not in logged
    assert "exit 0 after" in logged


def test_a_failed_command_raises_with_its_stderr_redacted():
    runner = CommandRunner()
    with pytest.raises(CommandFailed) as info:
        runner.run("sh", ["-c", "echo 'token: abcdef123' >&2; exit 3"])
    assert "exit 3" in str(info.value) and "abcdef123" not in str(info.value)
    assert info.value.result.returncode == 3


def test_check_false_returns_the_failure_instead():
    assert CommandRunner().run("sh", ["-c", "exit 4"], check=False).returncode == 4


def test_a_timeout_ends_the_command_and_its_children(tmp_path: Path):
    pid_file = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    with pytest.raises(CommandTimedOut, match=r"no result after 0\.5s"):
        CommandRunner().run("sh", ["-c", script], timeout=0.5)
    assert time.monotonic() - started < 8
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not process_alive(child), "the timed-out command's child is still running"


def process_alive(pid: int) -> bool:
    """Running, not merely an unreaped zombie (a container's init may never reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state


def test_a_missing_program_is_a_clear_failure():
    runner = CommandRunner(executables={"istioctl": "istioctl-that-is-not-installed"})
    with pytest.raises(CommandFailed, match="not found on PATH"):
        runner.run("istioctl", ["version"])


def test_a_bound_kubeconfig_is_all_the_tools_see():
    runner = CommandRunner().with_kubeconfig("/tmp/meshbench-kubeconfig-test.yaml")
    result = runner.run("sh", ["-c", 'echo "$KUBECONFIG"'])
    assert result.stdout.strip() == "/tmp/meshbench-kubeconfig-test.yaml"


def test_secret_output_is_returned_whole_but_never_logged(caplog):
    with caplog.at_level(logging.DEBUG, logger="meshbench.kube.runner"):
        result = CommandRunner().run("sh", ["-c", "echo 'token: abcdef123'"], secret_output=True)
    assert result.stdout == "token: abcdef123\n"
    assert "abcdef123" not in caplog.text


def test_render_shows_the_plain_tool_name_even_with_a_custom_program():
    runner = CommandRunner(executables={"kubectl": "/opt/bin/kubectl-1.28"})
    assert runner.render("kubectl", ["get", "ns", "--token=x"]) == "kubectl get ns --token=REDACTED"
