"""Every command a message suggests exists: each ``bctl ...``, ``bsh ...``, ``bbot ...`` and
``bastion ...`` in a string literal of ``src/bastion`` (error messages, hints, help texts; not
docstrings) is parsed against the real click command trees. A hint naming a command or flag
that does not exist fails here (issue 12, item 6)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from bastion.cli.bastion import main as bastion_main
from bastion.cli.bbot import main as bbot_main
from bastion.cli.bctl import main as bctl_main
from bastion.cli.bctl import split_ref
from bastion.cli.bsh import main as bsh_main
from bastion.errors import BastionError

SRC = Path(__file__).resolve().parents[3] / "src" / "bastion"
TREES: dict[str, click.Command] = {
    "bctl": bctl_main,
    "bsh": bsh_main,
    "bbot": bbot_main,
    "bastion": bastion_main,
}
PROGRAM = re.compile(r"(?<![\w./-])(bctl|bsh|bbot|bastion)(?= )")
# Words that may follow a program name in prose ("bsh prints it", "bctl on the auth host"):
# the program is the subject, nothing is suggested. A new sentence of this kind is added here on
# purpose; anything else after a program name must be a real subcommand or option.
PROSE = {
    "and",
    "asks",
    "callback",
    "cluster",
    "command",
    "executable",
    "has",
    "is",
    "on",
    "printed",
    "prints",
    "profile",
    "config",
    "running",
    "software",
    "to",
    "uses",
    "waits",
}
TOKEN = re.compile(r"^[\w@.:/=,{}<>$-]+$")
PLACEHOLDER = "X"


@dataclass(frozen=True)
class Hint:
    where: str
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {' '.join(self.words)}"


def _docstring_ids(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _strings(path: Path) -> list[tuple[int, str]]:
    """Non-docstring string literals; an f-string's fields become ``X``."""
    tree = ast.parse(path.read_text())
    skip = _docstring_ids(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            for part in node.values:
                skip.add(id(part))
            text = "".join(
                p.value if isinstance(p, ast.Constant) else PLACEHOLDER for p in node.values
            )
            found.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in skip:
                found.append((node.lineno, node.value))
    return [(line, text) for line, text in found if id(text) not in skip]


def _words(text: str) -> tuple[str, ...]:
    """The command words after a program name, up to the end of the clause."""
    words = []
    for raw in text.split(" "):
        if not raw:
            break  # two spaces: a column gap in a printed layout
        word = raw.rstrip(".,;:)?!'\"`")
        ended = word != raw or "\n" in word
        word = word.split("\n")[0]
        if not word or word.startswith("(") or not TOKEN.match(word):
            break
        if PROGRAM.fullmatch(word):
            break
        words.append(word)
        if ended:
            break
    return tuple(words)


def collect_hints() -> list[Hint]:
    hints = []
    for path in sorted(SRC.rglob("*.py")):
        for line, text in _strings(path):
            for match in PROGRAM.finditer(text):
                words = _words(text[match.end() + 1 :])
                where = f"{path.relative_to(SRC.parent)}:{line}"
                hints.append(Hint(where, (match.group(1), *words)))
    return hints


def _option_names(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _option(command: click.Command, flag: str) -> click.Option | None:
    for param in command.params:
        if isinstance(param, click.Option) and flag in (*param.opts, *param.secondary_opts):
            return param
    return None


def check_hint(words: tuple[str, ...]) -> str | None:
    """None when ``words`` parse with the real click tree, else why not."""
    program, *rest = words
    if rest and rest[0] in PROSE:
        return None
    command = TREES[program]
    ctx = click.Context(command, info_name=program, resilient_parsing=True)
    path = [program]
    args: list[str] = []
    skip_value = False
    ended = False  # after "--" every word is an argument
    value_next = False  # the word after a leaf command's option that takes a value
    for word in rest:
        if value_next:
            value_next = False
            args.append(word)
            continue
        if ended or word == "--":
            ended = True
            args.append(word)
            continue
        if word.startswith("-") and not word.startswith("--") and len(word) > 2:
            flag = word  # a bundle like -tA is checked letter by letter below
            unknown = [f"-{c}" for c in flag[1:] if f"-{c}" not in _option_names(command)]
            if unknown and f"{flag.split('=')[0]}" not in _option_names(command):
                return f"{' '.join(path)} has no option {flag}"
            args.append(word)
            continue
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            if flag not in _option_names(command):
                return f"{' '.join(path)} has no option {flag}"
            option = _option(command, flag)
            takes_value = option is not None and not option.is_flag and "=" not in word
            if isinstance(command, click.Group):  # a group's option: its value is skipped
                skip_value = takes_value
                continue
            args.append(word)
            value_next = takes_value
            continue
        if skip_value:
            skip_value = False
            continue
        if isinstance(command, click.Group) and not args:
            sub = command.get_command(ctx, word)
            if sub is None:
                if word == PLACEHOLDER or word.isupper():
                    return None  # "bsh mfa X": a computed subcommand, nothing to check
                return f"{' '.join(path)} has no command {word!r}"
            path.append(word)
            ctx = click.Context(sub, parent=ctx, info_name=word, resilient_parsing=True)
            command = sub
            continue
        args.append(word)
    try:
        command.make_context(path[-1], list(args), parent=ctx.parent, resilient_parsing=True)
    except click.UsageError as exc:
        return f"{' '.join(path)} {' '.join(args)}: {exc.format_message()}"
    refs = [a for a in args if not a.startswith("-")]
    if path[:2] == ["bctl", "get"] or path[:2] == ["bctl", "rm"] or path[:2] == ["bctl", "edit"]:
        if refs and not refs[0].startswith(PLACEHOLDER) and not refs[0].isupper():
            try:
                split_ref(refs[0], need_name=False)
            except BastionError as exc:
                return f"{' '.join(path)} {refs[0]}: {exc.message}"
    return None


HINTS = collect_hints()


def test_the_scan_finds_the_hints_it_should() -> None:
    texts = {" ".join(h.words) for h in HINTS}
    assert "bsh mfa add --passwordless" in texts
    assert any(t.startswith("bctl users reset") for t in texts)
    assert any(t.startswith("bsh login --proxy=") for t in texts)
    assert len(HINTS) > 40


@pytest.mark.parametrize("hint", HINTS, ids=str)
def test_every_suggested_command_exists(hint: Hint) -> None:
    problem = check_hint(hint.words)
    assert problem is None, f"{hint}: {problem}"


@pytest.mark.parametrize(
    "words",
    [
        ("bctl", "users", "add", "bob", "--force"),
        ("bctl", "users", "frobnicate"),
        ("bsh", "mfa", "add", "--no-such-flag"),
        ("bctl", "get", "role/x", "--fromat", "json"),
        ("bctl", "get", "oidc,saml,github"),
    ],
)
def test_the_checker_refuses_false_hints(words: tuple[str, ...]) -> None:
    assert check_hint(words) is not None


def test_no_message_suggests_a_flag_without_its_command() -> None:
    """``(use --force to overwrite)`` from the storage layer reached ``bctl users add`` (which has
    no --force): below the CLIs nobody knows which command runs, so a suggested flag names its
    command there. (In ``cli/`` and ``client/`` a bare flag belongs to the command running.)"""
    bare = re.compile(r"\b(use|pass|with|add) (--[a-z-]+)")
    offenders = [
        f"{path.relative_to(SRC.parent)}:{line}: {text!r}"
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).parts[0] not in ("cli", "client")
        for line, text in _strings(path)
        if bare.search(text) and not PROGRAM.search(text)
    ]
    assert offenders == []


# ---- every --help has an example (item 8), and its examples are real commands too -----------


def _walk(name: str, command: click.Command) -> list[tuple[str, click.Command]]:
    found = [(name, command)]
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=name)
        for sub in command.list_commands(ctx):
            child = command.get_command(ctx, sub)
            assert child is not None, f"{name} {sub} does not load"
            found += _walk(f"{name} {sub}", child)
    return found


COMMANDS = [*_walk("bsh", bsh_main), *_walk("bctl", bctl_main), *_walk("bbot", bbot_main)]


def _examples(help_text: str) -> list[tuple[str, ...]]:
    """The command lines of the Example(s) section of a help text."""
    section = help_text.split("Example", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in section.splitlines()[1:]]
    found = []
    for line in lines:
        match = PROGRAM.search(line + " ")
        if match and match.start() == line.find(match.group(1)):
            found.append((match.group(1), *_words(line[match.end() + 1 :] + " ")))
    return found


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_help_has_an_example_that_parses(path: str, command: click.Command) -> None:
    text = command.get_help(click.Context(command, info_name=path))
    assert "Example" in text, f"{path} --help shows no example:\n{text}"
    examples = _examples(text)
    assert examples, f"{path}: the example section shows no command"
    for words in examples:
        problem = check_hint(words)
        assert problem is None, f"{path} --help example {' '.join(words)}: {problem}"


def test_the_command_trees_are_complete() -> None:
    names = {p for p, _ in COMMANDS}
    assert {"bsh ssh", "bsh play", "bctl users add", "bctl edit", "bbot join"} <= names
