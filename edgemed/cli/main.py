"""The ``edgemed`` command. Each subcommand is one module; heavy imports happen inside them.

A command module (``edgemed/cli/<cmd>.py``) holds one function whose signature is its CLI (edgemed.cli.signature),
usually ``<cmd>(..., config: <Cmd>Config)`` calling ``run_<cmd>()`` in its package, and may declare ``RESUME``: how
to go on after an interruption (default: re-run the same command).

Exit codes: 0 success, 1 a budget or check the user set was broken, 2 bad usage or bad input,
3 an internal error (a bug: rerun with EDGEMED_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from edgemed import __version__
from edgemed.cli.signature import add_function, call, parse_doc
from edgemed.errors import EdgemedError, Terminated, describe_os_error, environment_error
from edgemed.registry import load_object

# name -> "module:function"; nested commands use a space ("data check").
COMMANDS: dict[str, str] = {
    "data check": "edgemed.cli.data:check",
    "train": "edgemed.cli.train:train",
    "merge": "edgemed.cli.merge:merge",
    "export": "edgemed.cli.export:export",
    "eval": "edgemed.cli.eval:evaluate",
    "bench": "edgemed.cli.bench:bench",
    "report": "edgemed.cli.report:report",
    "pipeline": "edgemed.cli.pipeline:pipeline",
    "tune": "edgemed.cli.tune:tune",
    "info": "edgemed.cli.info:info",
    "serve": "edgemed.cli.serve:serve",
    "loadtest": "edgemed.cli.loadtest:loadtest",
}


# What exit 1 means for each command (the other codes mean the same everywhere: exit_code_epilog).
EXIT_1: dict[str, str] = {
    "train": "not used (training has no check that fails: bad input is 2)",
    "merge": "the merged model's logits differ from base+adapter by more than --max-logit-diff (nothing written)",
    "export": "a format failed to export or failed its verification against the merged model (the others are "
              "kept; export.json names each)",
    "eval": "not used (an evaluation has no pass/fail check: bad input is 2)",
    "bench": "an artifact failed to load or be measured, or a budget or --baseline check broke (an inconclusive "
             "budget counts as --inconclusive says, fail by default)",
    "report": "with --tolerance, a metric regressed beyond its noise band",
    "pipeline": "a step's check broke: an export or its verification failed, or a bench budget or artifact failed",
    "tune": "no candidate meets every budget",
    "data check": "not used (bad rows are bad input: 2)",
    "info": "not used",
    "serve": "not used (bad input is 2; SIGTERM or Ctrl-C drains the requests in flight and exits 0)",
    "loadtest": "a budget was broken at some concurrency level (--max-error-rate, --max-ttft-p95-ms, "
                "--max-itl-p95-ms, --min-output-tokens-per-s)",
}
# How a command ends on a signal, where it is not the usual 130 / 128+N.
SIGNALS: dict[str, str] = {"serve": "SIGTERM or Ctrl-C: drains the requests in flight, then exits 0"}


def exit_code_epilog(command: str) -> str:
    """The exit-code table printed under every command's --help."""
    one = EXIT_1.get(command, "a budget or check you set was broken")
    return ("exit codes:\n"
            "  0    success\n"
            f"  1    {one}\n"
            "  2    bad usage or bad input (one line naming the problem and the fix)\n"
            "  3    internal error, a bug (rerun with EDGEMED_DEBUG=1 for the traceback and report it)\n"
            + (f"  0    {SIGNALS[command]}" if command in SIGNALS else
               "  130  interrupted (Ctrl-C); 128+N stopped by signal N (finished work is kept)"))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgemed",
        description="Fine-tune a small chat LLM on MedMCQA, export it to edge formats, benchmark them.",
        epilog=exit_code_epilog(""), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgemed {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, target in COMMANDS.items():
        fn = load_object(target)
        summary, _ = parse_doc(fn)
        escaped = summary.replace("%", "%%")  # argparse expands %-formats in help text, not in descriptions
        if " " in name:
            group, sub = name.split(" ", 1)
            if group not in groups:
                gp = top.add_parser(group, help=f"{group} commands")
                groups[group] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser)
                groups[group].required = True
            p = groups[group].add_parser(sub, help=escaped, description=summary, epilog=exit_code_epilog(name),
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        else:
            p = top.add_parser(name, help=escaped, description=summary, epilog=exit_code_epilog(name),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        add_function(p, fn)
        p.set_defaults(_fn=fn)
    return parser


_TERMINATED: list[int] = []  # the signal that arrived, kept in case the interpreter replaces its exception


def _terminate(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the cleanup short
    _TERMINATED.append(signum)
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "_fn", None):
        parser.print_help()
        return 2
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, _terminate)
    try:
        return _run(ns)
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def _how_to_resume(ns: argparse.Namespace) -> str:
    """The command that goes on from here: the command module's own RESUME hint (train, bench and tune resume only
    when asked to), else re-running it."""
    return getattr(sys.modules.get(ns._fn.__module__), "RESUME", "re-run the same command to go on")


def _run(ns: argparse.Namespace) -> int:
    try:
        result = call(ns._fn, ns)
    except EdgemedError as exc:
        print(f"edgemed {ns.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"edgemed {ns.command}: interrupted; finished work is kept; {_how_to_resume(ns)}", file=sys.stderr)
        return 130
    except Terminated as exc:
        return _stopped(ns, exc.signum)
    except Exception as exc:  # a bug: say so in one line unless debugging; a full disk or a read-only path is not
        if _TERMINATED:  # the signal's exception, replaced by the interpreter: a C extension's import it cut short
            return _stopped(ns, _TERMINATED[0])  # raises "ImportError: initialization failed"
        env_error = environment_error(exc)
        if env_error is None or os.environ.get("EDGEMED_DEBUG"):
            return _internal_error(ns, exc)
        where = getattr(ns, "out", None)
        print(f"edgemed {ns.command}: error: {describe_os_error(env_error, str(where) if where else None)}",
              file=sys.stderr)
        return 2
    return int(result or 0)


def _stopped(ns: argparse.Namespace, signum: int) -> int:
    name = signal.Signals(signum).name
    print(f"edgemed {ns.command}: stopped by {name}; partial outputs were removed and finished work is kept; "
          f"{_how_to_resume(ns)}", file=sys.stderr)
    return 128 + signum


def _internal_error(ns: argparse.Namespace, exc: BaseException) -> int:
    if os.environ.get("EDGEMED_DEBUG"):
        raise exc
    print(
        f"edgemed {ns.command}: internal error: {type(exc).__name__}: {exc} "
        "(rerun with EDGEMED_DEBUG=1 for the traceback and report it)",
        file=sys.stderr,
    )
    return 3


if __name__ == "__main__":
    sys.exit(main())
