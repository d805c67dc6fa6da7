"""Help texts: examples on the main commands, every option of eval documented, no raw reST markup."""

from __future__ import annotations

import pytest

from vidseg.cli.main import main


def help_text(capsys, *command: str) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["segment", "eval", "train"])
def test_main_commands_show_examples(capsys, command):
    text = help_text(capsys, command)
    assert "examples:" in text and f"vidseg {command} " in text.split("examples:")[1]


def test_no_raw_markup_and_every_eval_option_explained(capsys):
    for command in (["data"], ["data", "synth"], ["segment"], ["eval"], ["train"], ["bench"]):
        assert "``" not in help_text(capsys, *command), command
    text = help_text(capsys, "eval")
    for option in ("--task", "--dataset", "--matching", "--year", "--resolution"):
        block = text.split(option, 1)[1].split("\n  --", 1)[0]
        assert len(block.split()) > 3, option  # more than the choices alone
