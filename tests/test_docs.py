"""The docs stay honest: every command in them resolves, every relative link resolves, and the
README stays a front door.

    python -m pytest tests/test_docs.py

Every `python -m experiments ...` command in a fenced code block of README.md or
experiments/docs/*.md is resolved in this process, without training and without touching a
store or data: `run`, `search`, `model-summary` and `compare-activations` through the
config resolution that refuses a bad key or value (`config.parse`, `ResolvedConfig.instantiate`,
`search.plan.make_plan`), the other commands through a strict parse of their own flags.
The rules for writing commands (placeholders, examples of errors) are in
experiments/docs/development.md "The docs test".
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "experiments" / "docs"
PAGES = (
    "configuration.md",
    "tracking.md",
    "search.md",
    "using-models.md",
    "scaling-out.md",
    "faults-and-security.md",
    "benchmarks.md",
    "internals.md",
    "development.md",
)
README_MAX_LINES = 300

#: A placeholder: an ALL-CAPS word of three or more letters or underscores (RUN_ID, NAME,
#: MODEL, FILE, DIR, STUDY, MY_SPACE.yaml's MY_SPACE). A command whose experiment, study or
#: config file is a placeholder is checked by its flags only.
PLACEHOLDER = re.compile(r"(?<![A-Za-z0-9])[A-Z][A-Z_]{2,}(?![a-z0-9])")
#: shell tokens that end a command: pipes, lists, redirections, background
OPERATORS = re.compile(r"^(\||\|\||&&|;|&|\d?>>?.*|&>.*|<.*)$")
SHELL_BLOCKS = ("", "bash", "sh", "shell", "console", "text")
HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    argv: tuple[str, ...]  # what follows `python -m experiments`
    refused: bool  # shown as an example of an error: its output starts with `error:`

    def __str__(self) -> str:
        return f"{self.where}: python -m experiments {shlex.join(self.argv)}"


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS_DIR.glob("*.md"))]


def fenced_blocks(text: str):
    """(first line number, language, lines) of each fenced code block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        marker, lang, start = fence.group(1), fence.group(2).lower(), i + 1
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(marker):
            i += 1
        yield start + 1, lang, lines[start:i]
        i += 1


def logical_lines(lines: list[str], first: int):
    """(line number, text, the line after it) with `\\` continuations joined and
    here-documents left out."""
    i = 0
    while i < len(lines):
        number, text = first + i, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        after = lines[i] if i < len(lines) else ""
        heredoc = HEREDOC.search(text)
        if heredoc:  # the document is input to the command, not commands
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
        yield number, text, after


def experiments_argv(line: str, where: str) -> tuple[str, ...] | None:
    """What follows `python -m experiments` in a shell line, up to a pipe or redirection."""
    if "-m experiments" not in line:
        return None
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise AssertionError(f"{where}: the shell cannot split this line ({exc}): {line}") from exc
    for i in range(len(tokens) - 2):
        if Path(tokens[i]).name in ("python", "python3") and tokens[i + 1 : i + 3] == [
            "-m",
            "experiments",
        ]:
            rest = tokens[i + 3 :]
            end = next((j for j, t in enumerate(rest) if OPERATORS.match(t)), len(rest))
            return tuple(rest[:end])
    return None


def commands_in(path: Path) -> list[Command]:
    """The commands of one markdown file. In a block with `$ ` prompts (a transcript) only the
    prompted lines are commands, and one whose next line starts with `error:` is an example of
    a refusal; in other shell blocks every line is a command."""
    found = []
    name = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    for first, lang, lines in fenced_blocks(path.read_text()):
        if lang not in SHELL_BLOCKS:
            continue
        transcript = any(line.startswith("$ ") for line in lines)
        if not transcript and lang in ("text", "console"):
            continue  # output only
        for number, text, after in logical_lines(lines, first):
            if transcript and not text.startswith("$ "):
                continue
            refused = transcript and after.startswith("error:")
            argv = experiments_argv(text.removeprefix("$ "), f"{name}:{number}")
            if argv is not None:
                found.append(Command(f"{name}:{number}", argv, refused))
    return found


def all_commands() -> list[Command]:
    return [command for path in doc_files() for command in commands_in(path)]


# --- resolving one command, creating nothing ------------------------------------------------


class Refusal(Exception):
    """The command would be refused (exit 2) before creating anything; the message says why."""


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace, extras: list[str]) -> None:
        self.namespace, self.extras = namespace, extras


@contextlib.contextmanager
def stop_after_argparse():
    """Run a command's `main` up to its own argparse parse, which then raises `_Parsed`:
    the parser and its checks are the command's, and nothing after them runs."""
    real_known = argparse.ArgumentParser.parse_known_args
    real_args = argparse.ArgumentParser.parse_args

    def plain(parser) -> bool:  # jsonargparse's parsers subclass argparse's: leave them be
        return type(parser).__module__ == "argparse"

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = real_known(self, args, namespace)
        if not plain(self):
            return namespace, extras
        raise _Parsed(namespace, extras)

    def parse_args(self, args=None, namespace=None):
        namespace, extras = real_known(self, args, namespace)
        if not plain(self):
            return namespace  # jsonargparse has its own parse_args; not reached
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        raise _Parsed(namespace, [])

    argparse.ArgumentParser.parse_known_args = parse_known_args
    argparse.ArgumentParser.parse_args = parse_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_known_args = real_known
        argparse.ArgumentParser.parse_args = real_args


def parse_flags(command: str, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The command's own parse of `argv` (SystemExit 2 on a bad flag), nothing after it."""
    from experiments.__main__ import COMMANDS

    module = importlib.import_module(COMMANDS[command][0])
    with stop_after_argparse():
        try:
            module.main(argv)
        except _Parsed as parsed:
            return parsed.namespace, parsed.extras
    raise AssertionError(f"`{command}` returned without parsing its flags")


def has_placeholder(value: str | None) -> bool:
    return bool(value and PLACEHOLDER.search(value))


@functools.cache  # `run s1-mlp`, `run s1-mlp --help`, `--register NAME`: one resolution
def resolve_config(name: str, overrides: tuple[str, ...]) -> None:
    """What `run` does with NAME and its overrides before anything is created: parse the
    config (a bad key or value raises ConfigError) and build the model and datamodule."""
    from experiments.training.config import parse

    parse(name, list(overrides)).instantiate()


def resolve_run(argv: list[str]) -> None:
    from experiments.training import cli

    args, extras = cli.build_parser().parse_known_args(argv)
    args.name, overrides = cli.split_name(extras)
    name = args.config or args.name
    problem = cli.usage_error(args, name, overrides)
    if problem:
        raise Refusal(problem)
    if args.resume or (name is None and args.help):
        return  # the run's own logged config / the command's help
    if name is None:
        raise Refusal("no experiment given")
    if has_placeholder(name):
        return  # a file a previous command writes: its flags were parsed above
    resolve_config(name, tuple(overrides))


def resolve_search(argv: list[str]) -> None:
    from experiments.search.plan import build_parser, make_plan

    args, _ = build_parser().parse_known_args(argv)
    if has_placeholder(args.study) or has_placeholder(args.base):
        return
    make_plan(argv)


def resolve_model_summary(argv: list[str]) -> None:
    if argv and argv[0] not in ("-h", "--help"):
        resolve_config(argv[0], tuple(argv[1:]))  # what model-summary does before printing


def resolve_compare_activations(argv: list[str]) -> None:
    from experiments.reports import compare_activations as ca

    args, overrides = ca.build_parser().parse_known_args(argv)
    args.group_id = args.group_id or "act-docs"
    try:
        activations = ca._check_args(args, overrides)
    except ValueError as exc:
        raise Refusal(str(exc)) from exc
    ca.study_plan(args, activations, overrides, {})  # every run's config, resolved


def resolve_evaluate(argv: list[str]) -> None:
    from experiments.inference.evaluate import build_parser

    _, overrides = build_parser().parse_known_args(argv)
    flags = [o for o in overrides if o.startswith("-")]
    wrong = [o for o in flags if not o.startswith("--data.")]
    if wrong or len(overrides) != 2 * len(flags):
        raise Refusal(f"evaluate takes --data.KEY VALUE overrides only, got {overrides}")


RESOLVERS = {
    "run": resolve_run,
    "search": resolve_search,
    "model-summary": resolve_model_summary,
    "compare-activations": resolve_compare_activations,
    "evaluate": resolve_evaluate,
}
#: commands whose unknown flags go on to another program (`server`: to `mlflow server`)
PASSES_ON = ("server",)


def resolve(argv: tuple[str, ...]) -> None:
    """Raise `Refusal` if the command would be refused before it creates anything."""
    from experiments.__main__ import COMMANDS
    from experiments.errors import Refused

    argv_list = [a for a in argv if a not in ("-v", "--verbose")]
    if not argv_list:
        raise Refusal("no command")
    command, rest = argv_list[0], argv_list[1:]
    if command in ("-h", "--help"):
        return
    if command not in COMMANDS:
        raise Refusal(f"unknown command {command!r}")
    try:
        if command == "list":
            if rest:
                raise Refusal(f"list takes no arguments, got {rest}")
        elif command in RESOLVERS:
            RESOLVERS[command](rest)
        else:
            _, extras = parse_flags(command, rest)
            if extras and command not in PASSES_ON:
                raise Refusal(f"unrecognized arguments: {extras}")
    except Refused as exc:
        raise Refusal(str(exc)) from exc
    except SystemExit as exc:  # argparse: a bad flag or value (its message is on stderr)
        if exc.code not in (0, None):
            raise Refusal(f"argparse exit {exc.code}") from exc


@functools.cache  # the docs repeat commands; each is resolved once
def outcome(argv: tuple[str, ...]) -> str | None:
    """None when the command resolves, else why it is refused."""
    try:
        resolve(argv)
    except Refusal as exc:
        return str(exc) or "refused"
    return None


# --- the tests ------------------------------------------------------------------------------

COMMANDS = all_commands()


def test_the_reference_pages_exist_and_the_readme_is_a_front_door():
    assert sorted(p.name for p in DOCS_DIR.glob("*.md")) == sorted(PAGES)
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    for page in PAGES:  # the front door leads to every page
        assert f"experiments/docs/{page}" in "\n".join(lines), page


def test_the_commands_are_found_in_every_form_the_docs_use(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Text `python -m experiments not-a-block` is prose.\n"
        "```bash\n"
        "python -m experiments run s1-mlp --model.lr 0.1   # a comment\n"
        "python -m experiments search lr \\\n"
        "    --trials 4 > out.txt 2>&1\n"
        "MLFLOW_DISABLE_TELEMETRY=false python -m experiments ui &\n"
        "python - <<'EOF'\n"
        "python -m experiments inside-a-heredoc\n"
        "EOF\n"
        "python -m experiments compare | head -3\n"
        "```\n"
        "```text\n"
        "$ python -m experiments run s1-mlp --model.lrr 0.1\n"
        "error: unknown key --model.lrr\n"
        "$ python -m experiments list\n"
        "s0-mlp ...\n"
        "Open the UI: python -m experiments ui\n"
        "```\n"
        "```yaml\n"
        "cmd: python -m experiments yaml-is-not-shell\n"
        "```\n"
    )
    found = [(c.where.rpartition(":")[2], c.argv, c.refused) for c in commands_in(page)]
    assert found == [
        ("3", ("run", "s1-mlp", "--model.lr", "0.1"), False),
        ("4", ("search", "lr", "--trials", "4"), False),
        ("6", ("ui",), False),
        ("10", ("compare",), False),
        ("13", ("run", "s1-mlp", "--model.lrr", "0.1"), True),
        ("15", ("list",), False),
    ]


def test_the_docs_have_commands_to_check():
    by_file = {c.where.partition(":")[0] for c in COMMANDS}
    assert "README.md" in by_file
    assert len(COMMANDS) >= 50, len(COMMANDS)
    assert any(c.refused for c in COMMANDS)  # at least one example of an error


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_every_command_in_the_docs_resolves_as_written(command, capsys):
    before = _tree_listing()
    why = outcome(command.argv)
    capsys.readouterr()  # --help output and the like
    if command.refused:
        assert why is not None, f"{command}\n  is shown as an error, but it resolves"
    else:
        assert why is None, f"{command}\n  is refused: {why}"
    assert _tree_listing() == before, "resolving a command created files"


def _tree_listing() -> list[str]:
    """The repository's top level and its store folder: resolving must create neither."""
    return sorted([p.name for p in REPO.iterdir()] + [str(p) for p in (REPO / "mlruns").rglob("*")])


def test_a_misspelled_key_or_flag_is_refused():
    """The check can fail: the forms it meets in the docs, each with one thing wrong."""
    for argv in (
        ("run", "s1-mlp", "--model.lrr", "0.1"),
        ("run", "s4-mlp", "--model.activation", "nope"),
        ("search", "lr", "--trials", "4", "--trainer.max_epoch", "2"),
        ("search", "lrr"),
        ("model-summary", "s2-cnn", "--model.net.kernel", "3"),
        ("compare-activations", "--activations", "relu,nope"),
        ("compare", "--group-bye", "activation"),
        ("predict", "models:/fashion-mlp/1", "--top-k", "three"),
        ("bench", "speed", "--quik"),
        ("evaluate", "models:/fashion-mlp/1", "--model.lr", "0.1"),
        ("runn", "s1-mlp"),
        ("list", "--all"),
    ):
        assert outcome(argv) is not None, argv


# --- links ----------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings (outside code blocks)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(path):
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    broken = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{path.name}: " + "; ".join(broken)
