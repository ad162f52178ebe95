"""The documentation stays true to the code: README.md and docs/*.md.

Every command line of a ```bash block that runs something of this package is checked against that program: the
options of a console script (setup.py entry_points), a ``python -m depth_ros...`` module or a ``training/`` /
``bench/`` script are parsed by the program's own argparse parser; ``depth_node`` / ``adaptation_node`` ROS
arguments name parameters of the node and values it accepts (its :class:`~depth_ros.ros.params.ParameterTable`);
``ros2 launch depth_ros F a:=b`` needs launch/F to declare ``a``; ``make X V=v`` needs the Makefile target X and
variable V; paths into config/, training/, bench/ and launch/ must exist. Every ``from depth_ros... import`` of a
```python block must name something that exists, and every relative link (and its #anchor) must resolve.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import io
import re
import runpy
import shlex
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
CONSOLE_SCRIPTS = dict(re.findall(r'"(\w+) = ([\w.]+):main"', (REPO / "setup.py").read_text()))
NODE_TABLES = {"depth_node": "depth_ros.ros.params:NodeConfig",
               "adaptation_node": "depth_ros.ros.adaptation_node:AdaptationNodeConfig"}
ROS_FLAGS = {"-r", "--remap", "-p", "--param", "--params-file", "--log-level", "-e", "--enclave"}
SEPARATORS = {";", "&&", "||", "|", "&"}
REPO_DIRS = ("config/", "training/", "bench/", "launch/")


def _blocks(language: str) -> list[tuple[str, str]]:
    """(``file:line`` of its opening fence, text) of every fenced block in that language in the documentation files."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                found.append((f"{path.relative_to(REPO)}:{text.count(chr(10), 0, match.start()) + 1}", match.group(2)))
    return found


def _commands() -> list[tuple[str, list[str]]]:
    """(``file:line`` of its block, argv) of every simple command of every bash block: continuation lines joined,
    comments dropped, split at ``;``, ``&&``, ``||``, ``|``, leading ``VAR=value`` assignments removed."""
    commands = []
    for where, block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            command: list[str] = []
            for token in [*lexer, ";"]:
                if token not in SEPARATORS:
                    command.append(token)
                    continue
                while command and re.fullmatch(r"\w+=.*", command[0]):
                    command.pop(0)
                if command:
                    commands.append((where, command))
                command = []
    return commands


COMMANDS = _commands()


class _Parsed(Exception):
    """Raised instead of running a script once its parser accepted the arguments."""


_parse_args = argparse.ArgumentParser.parse_args


def _parse_then_stop(self, args=None, namespace=None):
    _parse_args(self, args, namespace)
    raise _Parsed


def _argparse_error(target: str, argv: list[str]) -> str | None:
    """Parse argv with the argparse parser of target, a module (its ``parse_args(argv)``) or a script of the
    repository (run as ``__main__`` up to its ``parse_args``); the parser's error line, or None if it accepts it."""
    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr), redirect_stdout(io.StringIO()):
            if target.endswith(".py"):
                with mock.patch.object(argparse.ArgumentParser, "parse_args", _parse_then_stop), \
                        mock.patch.object(sys, "argv", [target, *argv]):
                    runpy.run_path(str(REPO / target), run_name="__main__")
                return f"{target} ran without parsing its arguments"
            importlib.import_module(target).parse_args(argv)
    except _Parsed:
        pass
    except SystemExit as exc:
        if exc.code:
            return (stderr.getvalue().strip().splitlines() or [f"exit {exc.code}"])[-1]
    return None


def _ros_args_error(program: str, argv: list[str]) -> str | None:
    """Check ``--ros-args`` of a node: known flags, a readable ``--params-file`` and ``-p name:=value`` overrides the
    node's parameter table accepts together with it (names, types, ranges); the problem, or None."""
    if argv[:1] != ["--ros-args"]:
        return f"{program} takes only --ros-args, got {argv[:1]}"
    module, name = NODE_TABLES[program].split(":")
    table = getattr(importlib.import_module(module), name)
    params_file, overrides = None, {}
    flags = argv[1:]
    if len(flags) % 2:
        return f"{flags[-1]} without a value"
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        if flag not in ROS_FLAGS:
            return f"unknown ROS argument {flag}"
        if flag in ("-p", "--param"):
            key, _, text = value.partition(":=")
            overrides[key] = yaml.safe_load(text)
        elif flag == "--params-file":
            params_file = REPO / value
    try:
        table.from_params_file(params_file, **overrides)
    except (OSError, ValueError) as exc:
        return str(exc)
    return None


def _launch_error(argv: list[str]) -> str | None:
    """``ros2 launch depth_ros F a:=b ...``: launch/F exists and declares every argument a."""
    if argv[:1] != ["depth_ros"] or len(argv) < 2:
        return None
    path = REPO / "launch" / argv[1]
    if not path.is_file():
        return f"no launch file {path.relative_to(REPO)}"
    declared = {node.args[0].value for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"}
    unknown = sorted({arg.split(":=")[0] for arg in argv[2:]} - declared)
    return f"{argv[1]} declares no argument {unknown}" if unknown else None


def _make_error(argv: list[str]) -> str | None:
    """``make X V=v``: the Makefile has target X and sets variable V (``V ?=``)."""
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.-]+):(?!=)", makefile, re.M))
    variables = set(re.findall(r"^(\w+)\s*\??=", makefile, re.M))
    for arg in argv:
        name, is_variable, _ = arg.partition("=")
        if name not in (variables if is_variable else targets):
            return f"Makefile has no {'variable' if is_variable else 'target'} {name}"
    return None


def check_command(argv: list[str]) -> tuple[str, str | None] | None:
    """(what was checked, the problem or None) for a command of this package; None for other programs."""
    program, args = Path(argv[0]).name if "/bin/" in argv[0] else argv[0], argv[1:]
    if program == "ros2" and args[:2] == ["run", "depth_ros"]:
        program, args = args[2], args[3:]
    if program == "accelerate" and args[:1] == ["launch"]:
        program, args = "python", args[1:]
    if program in NODE_TABLES:
        return program, _ros_args_error(program, args)
    if program in CONSOLE_SCRIPTS:
        return program, _argparse_error(CONSOLE_SCRIPTS[program], args)
    if program in ("python", "python3") and args[:1] == ["-m"] and args[1].startswith("depth_ros"):
        return args[1], _argparse_error(args[1], args[2:])
    if program in ("python", "python3") and args and args[0].startswith(REPO_DIRS):
        if not (REPO / args[0]).is_file():
            return args[0], f"no file {args[0]}"
        return args[0], _argparse_error(args[0], args[1:])
    if program == "ros2" and args[:1] == ["launch"]:
        return "ros2 launch", _launch_error(args[1:])
    if program == "make":
        return "make", _make_error(args)
    return None


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[f"{where} {argv[0]}" for where, argv in COMMANDS])
def test_documented_command_is_accepted(where, argv):
    checked = check_command(argv)
    missing = [arg for arg in argv if arg.startswith(REPO_DIRS) and not (REPO / arg.split(":=")[-1]).exists()]
    assert not missing, f"{where}: {' '.join(argv)}: no such file {missing}"
    if checked is not None:
        assert checked[1] is None, f"{where}: {' '.join(argv)}: {checked[1]}"


def test_docs_run_every_console_script():
    programs = {check[0] for check in map(check_command, (argv for _, argv in COMMANDS)) if check}
    assert set(CONSOLE_SCRIPTS) <= programs, f"no documented command runs {set(CONSOLE_SCRIPTS) - programs}"
    assert {"make", "ros2 launch", "training/train_supervised.py", "training/evaluate.py"} <= programs


def test_checks_catch_wrong_commands():
    """The checks above fail on what they should: an unknown option, a bad value, an unknown parameter, launch
    argument or make target."""
    assert check_command(["infer", "x.jpg", "--no-such-option"])[1]
    assert check_command(["infer", "x.jpg", "--precision", "fp64"])[1]
    assert check_command(["python", "training/train_supervised.py", "--config", "c.yaml", "--epochs", "3"])[1]
    assert check_command(["depth_node", "--ros-args", "-p", "no_such_parameter:=1"])[1]
    assert check_command(["depth_node", "--ros-args", "-p", "precision:=fp64"])[1]
    assert check_command(["adaptation_node", "--ros-args", "-p", "threads:=-1"])[1]
    assert check_command(["ros2", "launch", "depth_ros", "depth.launch.py", "camra:=/camera"])[1]
    assert check_command(["make", "no_such_target"])[1]
    assert check_command(["infer", "x.jpg", "--checkpoint", "m.pth"]) == ("infer", None)


@pytest.mark.parametrize("where, code", _blocks("python"))
def test_python_example_imports_exist(where, code):
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("depth_ros"):
            module = importlib.import_module(node.module)
            missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
            assert not missing, f"{where}: {node.module} has no {missing}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation but - and _ dropped, spaces -> -."""
    text = FENCE.sub("", path.read_text())
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
            for title in re.findall(r"^#+ (.*)$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(REPO)) for doc in DOCS])
def test_relative_links_resolve(doc):
    links = re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", doc.read_text()))
    broken = []
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists() or (anchor and anchor not in _anchors(path)):
            broken.append(link)
    assert not broken, f"{doc.relative_to(REPO)}: broken links {broken}"
