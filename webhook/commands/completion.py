"""`netpol-guard completion bash|zsh`: shell completion, generated from the argparse tree,
so every command and flag that exists is completed and nothing that does not."""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

NAME = "completion"
HELP = "print a shell completion script (bash or zsh)"
DESCRIPTION = """\
Prints a completion script for netpol-guard and the kubectl plugin's command
(kubectl-netpol_guard) to stdout.

examples:
  source <(netpol-guard completion bash)                      # this bash session
  netpol-guard completion bash > ~/.local/share/bash-completion/completions/netpol-guard
  netpol-guard completion zsh > "${fpath[1]}/_netpol-guard"   # zsh, then restart it
"""

PROGRAMS = ("netpol-guard", "kubectl-netpol_guard")
# Values that name files or directories: complete paths for them.
_PATHLIKE = re.compile(r"FILE|PATH|DIR|OLD|NEW|CERT|KEY")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")


@dataclass
class Option:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    paths: bool = False


@dataclass
class Command:
    name: str
    help: str
    options: list[Option] = field(default_factory=list)
    subcommands: list["Command"] = field(default_factory=list)
    positional_paths: bool = False


def _subparsers(parser: argparse.ArgumentParser):
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _command(name: str, help_text: str, parser: argparse.ArgumentParser) -> Command:
    cmd = Command(name, help_text)
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help or "" for c in a._choices_actions}
            cmd.subcommands = [_command(n, helps.get(n, ""), p) for n, p in a.choices.items()]
        elif a.option_strings:
            metavar = a.metavar if isinstance(a.metavar, str) else " ".join(a.metavar or ())
            cmd.options.append(Option(tuple(a.option_strings), (a.help or "").split(";")[0], a.nargs != 0,
                                      tuple(map(str, a.choices or ())),
                                      bool(a.nargs != 0 and not a.choices and _PATHLIKE.search(metavar or ""))))
        elif a.choices:
            cmd.options.append(Option((), a.help or "", True, tuple(map(str, a.choices))))
        elif _PATHLIKE.search(str(a.metavar or a.dest).upper()):
            cmd.positional_paths = True
    return cmd


def tree() -> Command:
    from webhook.cli import build_parser
    parser = build_parser()
    return _command("netpol-guard", parser.description or "", parser)


# --- bash -------------------------------------------------------------------------------------

def bash(root: Command) -> str:
    cases = []
    for cmd in _walk(root):
        key = " ".join(cmd[0])
        c = cmd[1]
        words = [f for o in c.options for f in o.flags] + [s.name for s in c.subcommands]
        words += [ch for o in c.options if not o.flags for ch in o.choices]  # positional choices
        value_cases = []
        for o in c.options:
            if not o.flags or not o.takes_value:
                continue
            pattern = "|".join(o.flags)
            if o.choices:
                value_cases.append(f'      {pattern}) COMPREPLY=($(compgen -W "{" ".join(o.choices)}" -- "$cur")); return;;')
            elif o.paths:
                value_cases.append(f'      {pattern}) COMPREPLY=($(compgen -f -- "$cur")); return;;')
            else:
                value_cases.append(f'      {pattern}) COMPREPLY=(); return;;')
        files = 'COMPREPLY+=($(compgen -f -- "$cur"))' if c.positional_paths else ":"
        cases.append(f'''    "{key}")
      case "$prev" in
{chr(10).join(value_cases) if value_cases else "      --*=*) ;;"}
      esac
      COMPREPLY=($(compgen -W "{" ".join(words)}" -- "$cur"))
      if [[ "$cur" != -* ]]; then {files}; fi;;''')
    return f'''# bash completion for netpol-guard and kubectl-netpol_guard (netpol-guard completion bash)
_netpol_guard() {{
  local cur prev path i w
  cur="${{COMP_WORDS[COMP_CWORD]}}"
  prev="${{COMP_WORDS[COMP_CWORD-1]}}"
  path=""
  # the command path so far: the words before the cursor that name (sub)commands
  for ((i=1; i<COMP_CWORD; i++)); do
    w="${{COMP_WORDS[i]}}"
    case " $(_netpol_guard_children "$path") " in *" $w "*) path="${{path:+$path }}$w";; esac
  done
  case "$path" in
{chr(10).join(cases)}
  esac
}}
_netpol_guard_children() {{
  case "$1" in
{chr(10).join(f'    "{" ".join(p)}") echo "{" ".join(s.name for s in c.subcommands)}";;' for p, c in _walk(root))}
  esac
}}
complete -o filenames -o bashdefault -F _netpol_guard {" ".join(PROGRAMS)}
'''


def _walk(cmd: Command, path: tuple[str, ...] = ()):
    yield path, cmd
    for s in cmd.subcommands:
        yield from _walk(s, path + (s.name,))


# --- zsh --------------------------------------------------------------------------------------

def _zq(text: str) -> str:
    """Text for inside an _arguments spec in single quotes."""
    text = re.sub(r"[\[\]:]", " ", " ".join(text.split()))
    return text.replace("'", "'\\''")


def _zsh_specs(c: Command) -> list[str]:
    specs = []
    for o in c.options:
        if not o.flags:
            continue
        action = ""
        if o.takes_value:
            if o.choices:
                action = f":value:({' '.join(o.choices)})"
            elif o.paths:
                action = ":path:_files"
            else:
                action = ":value: "
        for flag in o.flags:
            specs.append(f"'{flag}[{_zq(o.help)}]{action}'")
    pos = [o for o in c.options if not o.flags and o.choices]
    for i, o in enumerate(pos, 1):
        specs.append(f"'{i}:{_zq(o.help) or 'value'}:({' '.join(o.choices)})'")
    if c.positional_paths:
        specs.append("'*:path:_files'")
    return specs


def _zsh_function(name: str, c: Command) -> list[str]:
    lines = [f"{name}() {{"]
    specs = " \\\n    ".join(_zsh_specs(c))
    if c.subcommands:
        described = " ".join(f"'{s.name}:{_zq(s.help)}'" for s in c.subcommands)
        lines += ["  local curcontext=\"$curcontext\" state line",
                  f"  _arguments -C {specs} '1: :->cmd' '*:: :->args'" if specs else
                  "  _arguments -C '1: :->cmd' '*:: :->args'",
                  "  case $state in",
                  f"    cmd) local -a cmds; cmds=({described}); _describe command cmds;;",
                  "    args)",
                  "      case $line[1] in"]
        lines += [f"        {s.name}) {name}_{s.name.replace('-', '_')};;" for s in c.subcommands]
        lines += ["      esac;;", "  esac"]
    else:
        lines.append(f"  _arguments {specs}" if specs else "  _files")
    lines.append("}")
    for s in c.subcommands:
        lines += _zsh_function(f"{name}_{s.name.replace('-', '_')}", s)
    return lines


def zsh(root: Command) -> str:
    body = "\n".join(_zsh_function("_netpol_guard", root))
    return f'''#compdef {" ".join(PROGRAMS)}
# zsh completion for netpol-guard and kubectl-netpol_guard (netpol-guard completion zsh)
{body}

if [ "$funcstack[1]" = "_netpol_guard" ]; then
  _netpol_guard "$@"
else
  compdef _netpol_guard {" ".join(PROGRAMS)}
fi
'''


# --- kubectl's plugin completion ----------------------------------------------------------------

# cobra's directives, which kubectl reads from the last line: 0 lets the shell complete
# file names, 4 (NoFileComp) does not.
_FILES, _NO_FILES = 0, 4


def candidates(words: list[str]) -> tuple[list[str], int]:
    """Completions for the last of `words` (what follows `netpol-guard`), and the directive."""
    cur, before = (words[-1], words[:-1]) if words else ("", [])
    cmd = tree()
    for w in before:
        sub = next((s for s in cmd.subcommands if s.name == w), None)
        if sub is not None:
            cmd = sub
    prev = next((o for o in cmd.options if before and before[-1] in o.flags and o.takes_value), None)
    if prev is not None:
        if prev.choices:
            return [c for c in prev.choices if c.startswith(cur)], _NO_FILES
        return [], _FILES if prev.paths else _NO_FILES
    words_here = [s.name for s in cmd.subcommands] + [f for o in cmd.options for f in o.flags]
    words_here += [c for o in cmd.options if not o.flags for c in o.choices]
    found = [w for w in words_here if w.startswith(cur) and (cur.startswith("-") or not w.startswith("-"))]
    return found, (_FILES if cmd.positional_paths and not cur.startswith("-") else _NO_FILES)


def kubectl_complete_main() -> int:
    """The `kubectl_complete-netpol_guard` console script: kubectl runs it to complete
    `kubectl netpol-guard ...` (kubectl 1.26+), with the words typed so far."""
    import sys
    found, directive = candidates(sys.argv[1:])
    sys.stdout.write("".join(f"{w}\n" for w in found) + f":{directive}\n")
    return 0


def run(args: argparse.Namespace) -> int:
    import sys
    sys.stdout.write(bash(tree()) if args.shell == "bash" else zsh(tree()))
    return 0
