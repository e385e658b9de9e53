"""
nanoGPT's "poor man's configurator", as an importable function with friendlier types.

Every script keeps its settings as module-level globals with defaults, then calls

    from configurator import configure
    configure(globals())

which applies sys.argv[1:] left to right (later arguments win):

    python train.py config/finetune_children_stories.py --batch_size=8 --compile=False

- An argument without '=' is a Python config file; its assignments override the globals.
- `--key=value` overrides one setting. The key must already exist. The value is parsed as a Python
  literal, falling back to the raw string, and must fit the setting's type.

Upstream's type check is exact; this one accepts what a person means and nothing else:
- an int where a float is expected (`--learning_rate=1`),
- `true`/`false` in any case (and 1/0, yes/no) for booleans (`--show_probs=true`),
- `None` for settings annotated as optional (`top_k: int | None = 200` accepts `--top_k=None`),
- any text for a str setting (`--start=42` is the prompt "42").
Anything else fails with a message naming the key, the value and the expected type.

A script that takes another script's command lines lists the keys it accepts and does not use in a
global IGNORED_SETTINGS (eval.py takes sample.py's): those are skipped with a note, not set.

run_main(main) runs a script's main() so that bad input (a UserError, ValueError or FileNotFoundError,
whose messages say what to fix) ends with one line `error: ...` instead of a traceback (TRACEBACK=1 shows
it); one_line_errors() does the same for a script that runs at module level (train.py).
"""

import ast
import errno
import math
import os
import sys
import types
import typing


class ConfigError(ValueError):
    """A command-line or config-file override that cannot be applied."""


class UserError(Exception):
    """Bad input a person can fix (a file, a key or a value): the message names it and the fix.
    Every script raises this; run_main turns it into one line `error: ...` and exit status 1."""


_BOOLS = {'true': True, 'false': False, '1': True, '0': False, 'yes': True, 'no': False}


def _allowed_types(g, key):
    """The setting's type(s) from its annotation if it has one, else from its default's type."""
    ann = g.get('__annotations__', {}).get(key)
    if ann is None:
        return (type(g[key]),), g[key] is None
    args = (typing.get_args(ann)
            if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union else (ann,))
    optional = type(None) in args
    return tuple(a for a in args if a is not type(None)), optional


def _type_name(types_, optional):
    names = [t.__name__ for t in types_]
    return ' or '.join(names + (['None'] if optional else []))


def coerce(key, raw, current, types_=None, optional=False, source='command line'):
    """Turn `raw` (a str from the command line, or a value from a config file) into the setting's type."""
    if types_ is None:
        types_ = (type(current),)
    from_cli = isinstance(raw, str) and source == 'command line'
    if from_cli:
        try:
            value = ast.literal_eval(raw)
        except (SyntaxError, ValueError):
            value = raw  # not a literal: keep the text (upstream does the same)
    else:
        value = raw
    want = _type_name(types_, optional)
    bad = ConfigError(f"{source}: {key}={raw!r} is not a valid {want} (the default is {current!r})")
    if from_cli and not optional and types_ == (str,):
        return value if isinstance(value, str) else raw  # any text: --start=None is the prompt "None"
    if value is None or (from_cli and isinstance(value, str) and value.strip().lower() == 'none'):
        if optional:
            return None
        raise ConfigError(f"{source}: {key} cannot be None; expected {want} (the default is {current!r})")
    for t in types_:
        if t is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _BOOLS:
                return _BOOLS[value.strip().lower()]
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
        elif t is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer() and math.isfinite(value):
                return int(value)  # 1e3 -> 1000
        elif t is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)  # 'inf', 'nan': rejected later by whatever checks ranges
                except ValueError:
                    pass
        elif t is str:
            if isinstance(value, str):
                return value  # --start='"quoted"' unquotes, as upstream does
            if from_cli:
                return raw  # the text as typed: --start=42 is the prompt "42"

        elif isinstance(value, t):
            return value
    raise bad


def apply_file(g, path):
    """Run a config file and copy its settings into g, with the same checks as --key=value. Returns the
    keys the file assigns (to any value, an unchanged default too)."""
    try:
        with open(path, encoding='utf-8') as f:
            src = f.read()
    except OSError as e:
        raise ConfigError(f"config file {path!r} cannot be read ({e.strerror}); "
                          f"arguments without '=' are config files, "
                          f"settings are written --key=value") from None
    ns = dict(g)  # the file may read the current settings
    try:
        code = compile(src, path, 'exec', ast.PyCF_ONLY_AST)
        assigned = {t.id for node in ast.walk(code) if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)}
        exec(compile(code, path, 'exec'), ns)
    except Exception as e:
        raise ConfigError(f"config file {path!r} failed: {type(e).__name__}: {e}") from None
    print(f"Overriding config with {path}")
    for key, value in ns.items():
        if (key.startswith('_') or key == '__builtins__'
                or isinstance(value, (types.ModuleType, types.FunctionType, type))):
            continue
        if key in g.get('IGNORED_SETTINGS', ()):
            _note_ignored(g, key, value)
            continue
        if key not in g:
            raise ConfigError(f"config file {path!r} sets unknown key {key!r}")
        if value is g[key]:
            continue
        types_, optional = _allowed_types(g, key)
        g[key] = coerce(key, value, g[key], types_, optional, source=f"config file {path!r}")
    return {k for k in assigned if k in g and k not in g.get('IGNORED_SETTINGS', ())}


def apply_arg(g, arg):
    """Apply one `--key=value` argument to g. Returns the key set (none for an ignored one)."""
    if not arg.startswith('--'):
        raise ConfigError(f"argument {arg!r}: settings are written --key=value")
    key, _, raw = arg[2:].partition('=')  # only the first '=' splits: values may contain '='
    key = key.replace('-', '_') if key not in g else key
    if key in g.get('IGNORED_SETTINGS', ()):
        _note_ignored(g, key, raw)
        return set()
    if key not in g or key.startswith('_'):
        close = [k for k in g if not k.startswith('_')
                 and isinstance(g[k], (int, float, bool, str, type(None)))
                 and (k.startswith(key[:3]) or key in k)]
        hint = f" (did you mean {', '.join(sorted(close)[:5])}?)" if close else ''
        raise ConfigError(f"unknown config key: {key!r}{hint}")
    types_, optional = _allowed_types(g, key)
    g[key] = coerce(key, raw, g[key], types_, optional)
    print(f"Overriding: {key} = {g[key]!r}")
    return {key}


def _note_ignored(g, key, value):
    script = os.path.basename(g.get('__file__') or 'this script')
    print(f"Ignoring: {key} = {value!r} ({script} does not use this setting)")


def configure(g, argv=None):
    """Apply argv (default sys.argv[1:]) to the globals dict g; returns the keys that were set (to any
    value: a resumed run tells a setting asked for from a default). From the command line, errors exit
    with a one-line message; when argv is given (tests, notebooks) they raise ConfigError."""
    cli = argv is None
    argv = sys.argv[1:] if cli else argv
    given = set()
    try:
        for arg in argv:
            if '=' not in arg:
                if arg.startswith('--'):
                    raise ConfigError(f"argument {arg!r} has no value: write {arg}=VALUE "
                                      f"(for a flag, {arg}=True)")
                given |= apply_file(g, arg)
            else:
                given |= apply_arg(g, arg)
    except ConfigError as e:
        if cli:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)  # a usage error, as argparse reports them
        raise
    return given


ONE_LINE = (UserError, ValueError, FileNotFoundError)  # errors whose message says what to fix
DISK_FIXES = {  # an OSError of a file on a full or read-only disk says what to fix in one line too
    errno.ENOSPC: "the disk is full: free some space, or write somewhere else",
    errno.EDQUOT: "the disk quota is used up: free some space, or write somewhere else",
    errno.EROFS: "write somewhere else",
    errno.EACCES: "check the folder's permissions, or write somewhere else",
    errno.EPERM: "check the folder's permissions, or write somewhere else"}


def one_line(e):
    """The one-line message of an error that says what to fix (ONE_LINE, or a disk's OSError naming its
    file), or None for an error that is a bug to show with its traceback."""
    if isinstance(e, ONE_LINE):
        return str(e)
    if isinstance(e, OSError) and e.errno in DISK_FIXES and e.filename:
        return f"{e.filename}: {e.strerror}; {DISK_FIXES[e.errno]}"
    return None


def run_main(main):
    """Run a script's main(); bad input ends the script with a one-line message and exit status 1."""
    try:
        return main()
    except (*ONE_LINE, OSError) as e:
        msg = one_line(e)
        if msg is None or os.environ.get('TRACEBACK'):
            raise
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)


def one_line_errors():
    """run_main's rule for a script that runs at module level, as upstream's train.py: an uncaught
    UserError (ValueError, FileNotFoundError) prints as one line `error: ...`; the exit status is 1."""
    def hook(kind, e, tb):
        msg = one_line(e)
        if msg is not None and not os.environ.get('TRACEBACK'):
            print(f"error: {msg}", file=sys.stderr)
        else:
            sys.__excepthook__(kind, e, tb)
    sys.excepthook = hook
