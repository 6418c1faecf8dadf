"""The shared command runner: `--flag a b` lists, typed values, one-line errors.

.venv/bin/python -m pytest tests/test_command.py -q
"""

from __future__ import annotations

import pytest

from bertlab.command import run


def build(
    input: list[str],
    output_dir: str,
    nsp: bool = True,
    date: str | None = None,
    valid_docs: int | float = 0.01,
    num_proc: int = 1,
) -> None:
    """A command shaped like the tools'."""
    if num_proc < 1:
        raise ValueError(f"--num_proc must be >= 1, got {num_proc}")
    print(repr((input, output_dir, nsp, date, valid_docs, num_proc)))


def test_lists_and_types_follow_the_annotations(capsys):
    run(build, ["--input", "a.txt", "b.txt", "--output_dir", "7", "--nsp", "false",
                "--date", "20240101", "--valid_docs", "10", "--num_proc", "2"])  # fmt: skip
    assert capsys.readouterr().out.strip() == repr(
        (["a.txt", "b.txt"], "7", False, "20240101", 10, 2)
    )


def test_a_user_error_is_one_line_and_exit_status_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(build, ["--input", "a", "--output_dir", "o", "--num_proc", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: --num_proc must be >= 1, got 0\n"


def test_an_unknown_flag_is_named(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(build, ["--input", "a", "--output_dir", "o", "--shards", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shards" in err and "--num_proc" in err


def test_a_bad_boolean_is_named(capsys):
    with pytest.raises(SystemExit):
        run(build, ["--input", "a", "--output_dir", "o", "--nsp", "maybe"])
    assert "--nsp expects true or false" in capsys.readouterr().err


def test_a_flag_without_its_value_is_named(capsys):
    with pytest.raises(SystemExit):
        run(build, ["--output_dir", "o", "--input"])
    assert capsys.readouterr().err == "error: --input needs a value\n"
    with pytest.raises(SystemExit):
        run(build, ["--input", "a", "--output_dir"])
    assert capsys.readouterr().err == "error: --output_dir needs a value\n"


def test_a_missing_required_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(build, ["--input", "a"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --output_dir is required (see --help)\n"


def test_a_float_for_an_integer_flag_is_named(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(build, ["--input", "a", "--output_dir", "o", "--num_proc", "1e3"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --num_proc expects an integer, got 1000.0\n"
    run(build, ["--input", "a", "--output_dir", "o", "--valid_docs", "0.5"])  # int | float
    assert "0.5" in capsys.readouterr().out
