"""``dpdau`` for people: every command explains itself, every setting fails clearly, retries end.

The settings sweep enumerates ``config.variables()``, so a setting added later is covered the day
it is added (it runs ``main`` in-process: one process per value would take minutes;
``tests/e2e/test_bad_config.py`` runs the named cases through the real process).
"""

from __future__ import annotations

import argparse
import types
import typing

import pytest

from gateway import cli
from gateway import config as config_mod
from tests.support import free_port

# String settings that take any text (a bad one is found where it is used: HOST at bind, DATA_DIR
# before start, JOURNAL_URL by its parser); every other string setting must be listed with a bad value.
FREE_TEXT = {"HOST", "DATA_DIR", "API_KEY", "READ_API_KEY", "INGEST_API_KEY", "ADMIN_API_KEY", "JOURNAL_URL"}
BAD_TEXT = {
    "HASH_SALT_SECRET": "short",
    "DPDAU_ENV": "staging",
    "LOG_LEVEL": "chatty",
    "JOURNAL_SYNC": "SOMETIMES",
    "TIMEZONE": "Mars/Olympus",
    "RELEASE_START": "2026-02-30",
    "REVISION_LAGS_DAYS": "7,soon",
    "EXPERIMENT_ID": "x" * 65,
}


def _kinds(annotation: object) -> set[object]:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return {typing.get_origin(a) or a for a in args if a is not type(None)}


def bad_values() -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    for name, (struct, field) in sorted(config_mod.variables().items()):
        kinds = _kinds(typing.get_type_hints(struct)[field])
        if kinds & {int, float}:
            cases += [(name, "not-a-number"), (name, "-1")]
        elif typing.Literal in kinds:
            cases.append((name, "no-such-choice"))
        elif bool in kinds:
            cases.append((name, "perhaps"))
        elif name in BAD_TEXT:
            cases.append((name, BAD_TEXT[name]))
        else:
            assert name in FREE_TEXT, f"{name}: add a bad value to BAD_TEXT (or to FREE_TEXT if any text is valid)"
    return cases


@pytest.mark.parametrize(("name", "value"), bad_values())
def test_every_setting_rejects_a_bad_value_with_one_line_naming_it(name, value, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv(name, value)
    # A command that would fail differently (exit 1, cannot reach) if the configuration were accepted.
    code = cli.main(["budget", "--url", f"http://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (name, value, err)
    assert len(err) == 1 and err[0].startswith("configuration error: ") and name in err[0], err


def test_free_text_settings_exist():
    # FREE_TEXT must not hide a removed or renamed setting
    assert FREE_TEXT - set(config_mod.variables()) <= {"JOURNAL_URL"}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_subcommand_says_what_it_does_with_an_example(name):
    sub = subcommands()[name]
    text = sub.format_help()
    assert sub.description and len(sub.description) > 40, name
    assert "example:" in text and f"dpdau {name}" in text.split("example:", 1)[1], text


def test_top_level_help_lists_every_command_and_examples():
    text = cli.build_parser().format_help()
    assert "examples:" in text
    for name in subcommands():
        assert name in text


@pytest.mark.parametrize(
    ("retries", "seconds", "retry", "elapsed", "retry_after", "expected"),
    [
        (3, 60, 1, 0.0, "2", 2.0),  # Retry-After is honoured
        (3, 60, 3, 0.0, "0", 0.0),
        (3, 60, 4, 0.0, "0", None),  # the count bound
        (3, 60, 1, 0.0, None, 0.5),  # no header: 0.5 s, doubling
        (3, 60, 3, 0.0, None, 2.0),
        (50, 1000, 20, 0.0, None, 30.0),  # ... at most 30 s
        (3, 60, 1, 0.0, "Wed, 21 Oct 2015 07:28:00 GMT", 0.5),  # an HTTP date: our own backoff
        (3, 10, 1, 9.0, "2", None),  # the time bound, counting the wait it would ask for
        (3, 10, 1, 0.0, "30", None),  # asked to wait beyond the time bound: give up now
    ],
)
def test_retry_policy_is_bounded_by_count_and_time(retries, seconds, retry, elapsed, retry_after, expected):
    assert cli.Retry(retries, seconds).wait(retry, elapsed, retry_after) == expected
