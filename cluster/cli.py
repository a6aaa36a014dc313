"""The `socialalign` command. `python -m <stage module>` enters here too, so both are one entry point.

    socialalign <stage> [--config FILE] [--print-config] [key=value ...]
    socialalign submit <stage> --address http://HOST:8265 [--config FILE] [key=value ...]

Exit codes: 0 done, 1 the stage failed, 2 bad usage or config, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from cluster.config import ConfigError, describe_fields, dump_config, load_config
from cluster.logs import setup_logging
from cluster.stages import STAGES, Flag, Stage, stage_for_module

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = logging.getLogger("socialalign")


def main(argv: Sequence[str] | None = None, prog: str = "socialalign") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] in STAGES and argv[1] in STAGES[argv[0]].actions:
        setup_logging()
        return STAGES[argv[0]].load_action(argv[1])(argv[2:], prog=f"{prog} {argv[0]} {argv[1]}")
    parser = build_parser(prog)
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if not _take_overrides(args, unknown, parser):
        return EXIT_USAGE
    if args.command == "submit":
        return _submit(args, prog)
    if args.command == "cluster":
        return _cluster(args, prog)
    return run_stage(STAGES[args.command], args, prog=f"{prog} {args.command}")


def module_main(module: str) -> None:
    """Entry of `python -m <module>`: the same parser and runner as `socialalign <stage>`."""
    if module == "cluster":
        sys.exit(main(prog="python -m cluster"))
    stage = stage_for_module(module)
    prog = f"python -m {module}"
    if len(sys.argv) >= 2 and sys.argv[1] in stage.actions:
        setup_logging()
        sys.exit(stage.load_action(sys.argv[1])(sys.argv[2:], prog=f"{prog} {sys.argv[1]}"))
    parser = argparse.ArgumentParser(prog=prog, description=stage.summary, **_help_layout(stage))
    add_stage_arguments(parser, stage)
    args, unknown = parser.parse_known_args()
    if not _take_overrides(args, unknown, parser):
        sys.exit(EXIT_USAGE)
    sys.exit(run_stage(stage, args, prog=prog))


def build_parser(prog: str = "socialalign") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="SocialAlign: predict how users (micro) and crowds (macro) respond to news on social media.",
        epilog="Run `%(prog)s <command> --help` for a command's options and config fields.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="<command>")
    for stage in STAGES.values():
        sub = commands.add_parser(stage.name, help=stage.summary, description=stage.summary, **_help_layout(stage))
        add_stage_arguments(sub, stage)
    submit = commands.add_parser(
        "submit",
        help="submit a stage to a Ray cluster as a Ray job (ray job submit --working-dir .)",
        description="Submit a stage as a Ray job: uploads the working dir, runs `python -m <stage> --config ...` "
        "on the cluster, streams its logs and exits with the job's outcome.",
    )
    submit.add_argument("stage", choices=list(STAGES), help="the stage to run")
    submit.add_argument(
        "--address",
        default=None,
        help="Ray dashboard URL, e.g. http://127.0.0.1:8265 (default: $RAY_ADDRESS when it is a URL)",
    )
    submit.add_argument("--config", "-c", help="stage YAML file, inside the working dir")
    submit.add_argument("--working-dir", default=".", help="directory uploaded to the cluster (default: .)")
    submit.add_argument("--no-wait", action="store_true", help="return once the job is accepted")
    submit.add_argument("--submission-id", help="job id to use (default: socialalign-<stage>-<time>)")
    submit.add_argument(
        "--pip",
        action="store_true",
        help="install the project's dependencies (pyproject.toml) into the job's runtime env: for a cluster "
        "whose image lacks them (the k8s image has them; needs network on the cluster)",
    )
    submit.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, passed to the job")
    _add_cluster_command(commands)
    return parser


def _add_cluster_command(commands: argparse._SubParsersAction) -> None:
    cluster = commands.add_parser(
        "cluster",
        help="a real multi-node Ray cluster on this machine: up, status, down",
        description="A head and N worker nodes on this machine, each its own `ray start` (raylet, object store, "
        "CPUs and a resource naming it), token auth on, the dashboard on 127.0.0.1; `down` stops what `up` started.",
    )
    cluster.add_argument("action", choices=("up", "status", "down"))
    cluster.add_argument("--workers", type=int, default=2, help="worker nodes (default: 2)")
    cluster.add_argument("--cpus-per-node", type=float, default=2, help="logical CPUs of each worker (default: 2)")
    cluster.add_argument("--head-cpus", type=float, default=1, help="logical CPUs of the head (default: 1)")
    cluster.add_argument("--dir", default=".cache/local-cluster", help="where its state, token and node logs live")


def add_stage_arguments(parser: argparse.ArgumentParser, stage: Stage) -> None:
    parser.add_argument("--config", "-c", help=f"{stage.name} YAML file (default: built-in defaults)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides log_level")
    for flag in stage.flags:
        if flag.kind == "switch":
            parser.add_argument(flag.name, dest=_dest(flag.field), action="store_true", default=None, help=flag.help)
        elif flag.kind == "append":
            parser.add_argument(flag.name, dest=_dest(flag.field), action="append", metavar="PATH", help=flag.help)
        else:
            parser.add_argument(
                flag.name, dest=_dest(flag.field), choices=flag.choices, metavar=_metavar(flag), help=flag.help
            )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. ray.address=auto")


def run_stage(stage: Stage, args: argparse.Namespace, prog: str) -> int:
    overrides = [*args.overrides, *_flag_overrides(stage, args)]
    try:
        config = load_config(stage.config_model(), args.config, overrides)
    except ConfigError as error:
        _print_config_error(prog, error)
        return EXIT_USAGE
    setup_logging(config.log_level)
    if args.print_config:
        print(dump_config(config), end="")
        return EXIT_OK
    if config.ray.address.startswith(("http://", "https://")):
        log.info("ray.address is a dashboard URL: submitting %s as a Ray job", stage.name)
        return _submit_job(prog, stage, config.ray.address, args.config, overrides)
    try:
        return int(stage.load_runner()(config) or EXIT_OK)
    except ConfigError as error:  # a problem only the stage can see (a missing file, an empty topic list)
        _print_config_error(prog, error)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        log.exception("%s failed", stage.name)
        return EXIT_FAILED


def _submit(args: argparse.Namespace, prog: str) -> int:
    address = args.address or os.environ.get("RAY_ADDRESS", "")
    if not address.startswith(("http://", "https://")):
        print(f"{prog} submit: --address is required: the Ray dashboard URL, e.g. http://127.0.0.1:8265",
              file=sys.stderr)
        return EXIT_USAGE
    setup_logging()
    return _submit_job(
        f"{prog} submit",
        STAGES[args.stage],
        address,
        args.config,
        args.overrides,
        working_dir=args.working_dir,
        wait=not args.no_wait,
        submission_id=args.submission_id,
        pip=args.pip,
    )


def _cluster(args: argparse.Namespace, prog: str) -> int:
    from cluster import local_cluster

    directory = Path(args.dir)
    try:
        if args.action == "up":
            state = local_cluster.up(directory, args.workers, args.cpus_per_node, args.head_cpus)
        elif args.action == "down":
            print(f"stopped {', '.join(local_cluster.down(directory))}")
            return EXIT_OK
        else:
            state = local_cluster.load(directory)
            alive = local_cluster.alive_nodes(state)
            print("alive: " + ", ".join(sorted(alive)))
    except (RuntimeError, TimeoutError) as error:
        print(f"{prog} cluster: {error}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(local_cluster.describe(state)))
    return EXIT_OK


def _submit_job(prog: str, stage: Stage, address: str, config: str | None, overrides: list[str], **options) -> int:
    """`submit_stage`, with its errors as one line each: a bad config exits 2, a refused job 1."""
    from cluster.submit import SubmitError, submit_stage

    try:
        return submit_stage(stage, address, config, overrides, **options)
    except ConfigError as error:
        _print_config_error(prog, error)
        return EXIT_USAGE
    except SubmitError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_FAILED


def _take_overrides(args: argparse.Namespace, unknown: list[str], parser: argparse.ArgumentParser) -> bool:
    """argparse stops collecting positionals at the first option; pick up the `key=value` left after it."""
    strays = [item for item in unknown if "=" not in item or item.startswith("-")]
    if strays:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: unrecognized arguments: {' '.join(strays)}", file=sys.stderr)
        return False
    args.overrides = [*getattr(args, "overrides", []), *unknown]
    return True


def _flag_overrides(stage: Stage, args: argparse.Namespace) -> list[str]:
    found = [f"log_level={args.log_level}"] if args.log_level else []
    for flag in stage.flags:
        value = getattr(args, _dest(flag.field), None)
        if value is None:
            continue
        if flag.kind == "csv":
            value = "[" + ", ".join(part.strip() for part in value.split(",") if part.strip()) + "]"
        elif flag.kind == "append":
            value = "[" + ", ".join(_quote(item) for item in value) + "]"
        elif flag.kind == "switch":
            value = "true"
        else:
            value = _quote(value)
        found.append(f"{flag.field}={value}")
    return found


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _metavar(flag: Flag) -> str | None:
    return None if flag.choices else flag.name.lstrip("-").upper().replace("-", "_")


def _dest(field: str) -> str:
    return "flag_" + field.replace(".", "__")


def _help_layout(stage: Stage) -> dict[str, object]:
    lines = [f"Also: {stage.name} {name} --help" for name in stage.actions] + [""] * bool(stage.actions)
    for name, default, text in describe_fields(stage.config_model()):
        lines.append(f"  {name} = {default}")
        lines += textwrap.wrap(text, 76, initial_indent="      ", subsequent_indent="      ")
    epilog = (
        "Config fields: YAML keys of --config, or key=value arguments (nested: ray.address=auto).\n"
        "Secret fields are read from the environment variables named.\n" + "\n".join(lines)
    )
    return {"epilog": epilog, "formatter_class": argparse.RawDescriptionHelpFormatter}


def _print_config_error(prog: str, error: ConfigError) -> None:
    for line in str(error).splitlines():
        print(f"{prog}: config error: {line}", file=sys.stderr)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("socialalign")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
