"""``manage.py relay`` refuses bad arguments with one readable line."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--upstream", "ftp://x", "--key", "k"], "--upstream must be an http"),
        (["--upstream", "http://x", "--key", " "], "--key (or CONTROLPLANE_RELAY_KEY)"),
    ],
)
def test_relay_command__bad_arguments__command_error(argv, message, monkeypatch):
    # Given
    monkeypatch.delenv("CONTROLPLANE_RELAY_KEY", raising=False)
    # When
    with pytest.raises(CommandError) as caught:
        call_command("relay", *argv)
    # Then
    assert message in str(caught.value)


def test_relay_command__data_dir_not_writable__command_error(tmp_path):
    # Given
    blocker = tmp_path / "file"
    blocker.write_text("")
    # When
    with pytest.raises(CommandError) as caught:
        call_command(
            "relay",
            "--upstream",
            "http://x",
            "--key",
            "k",
            "--data-dir",
            str(blocker / "d"),
        )
    # Then
    assert "--data-dir" in str(caught.value)
