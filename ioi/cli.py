"""The ``ioi`` command line: ``ioi replicate`` reproduces the IOI analysis on a model;
``ioi app`` serves the course site (Streamlit).

Every user error prints one line and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import socket
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ioi.head import Head

EXIT_USAGE = 2
DEFAULT_HOST = "127.0.0.1"  # Streamlit's own default is every interface
STOP_TIMEOUT_S = 10
PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # the repository, in an editable install


class UsageError(ValueError):
    """A bad command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, instead of argparse's usage block
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"seed must be a non-negative integer, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {value}")
    return value


REPORT_DEFAULT = object()
"""``--max-heads`` not given: `ioi.report.sections.Settings`' own (not imported here, to keep
``ioi --help`` fast)."""


def _max_heads(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'none', got {text!r}"
        ) from None


def _device(text: str) -> str:
    from ioi.device import check_device_name

    try:
        return check_device_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ioi", description="Indirect Object Identification: course and replication"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rep = sub.add_parser("replicate", help="reproduce the IOI analysis and write a report")
    rep.add_argument(
        "--model",
        default=None,
        help="toy | gpt2-small | a TransformerLens model name (pythia-160m, Qwen/Qwen2.5-0.5B, "
        "...) | PATH (a Hugging Face directory with its tokenizer: GPT-2, Llama, GPT-NeoX, ...; "
        "or a toy .safetensors); default: gpt2-small if its weights are on disk, else toy",
    )
    rep.add_argument(
        "--device", default="auto", type=_device, help="auto | cpu | cuda | cuda:N | mps"
    )
    rep.add_argument(
        "--n", type=_positive_int, default=200, help="number of IOI prompts (default 200)"
    )
    rep.add_argument("--seed", type=_seed, default=1, help="dataset seed (default 1)")
    rep.add_argument("--out", type=Path, default=Path("ioi_report"), help="output directory")
    rep.add_argument(
        "--max-heads",
        type=_max_heads,
        default=REPORT_DEFAULT,
        help="discovery's head budget per threshold (default 52, the report's "
        "Settings.max_heads; none: no budget)",
    )
    app = sub.add_parser("app", help="serve the course site (Streamlit) on localhost")
    app.add_argument("--port", type=_port, default=8501, help="port to serve on (default 8501)")
    app.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: only this machine can connect; "
        "0.0.0.0 serves every interface)",
    )
    app.add_argument("--headless", action="store_true", help="do not open a browser (servers, CI)")
    return parser


def choose_model(requested: str | None) -> tuple[str, str]:
    """The model to use and why."""
    from ioi.models import cached_gpt2_dir

    if requested is not None:
        return requested, "asked for with --model"
    snapshot = cached_gpt2_dir()
    if snapshot is not None:
        return (
            "gpt2-small",
            f"GPT-2 small's weights are in the local Hugging Face cache: {snapshot}",
        )
    return "toy", "GPT-2 small's weights are not on this machine, so the bundled IOI model is used"


def cmd_replicate(args: argparse.Namespace, console: Console) -> int:
    from ioi.models import load_model
    from ioi.replicate import replicate
    from ioi.report import check_out_dir
    from ioi.report.sections import kept_words_text

    check_out_dir(args.out)  # before loading anything: a bad --out fails in a second
    name, why = choose_model(args.model)
    model = load_model(name, device=args.device)  # user errors surface here, before any output
    console.print(f"[bold]model:[/bold] {name} ({why}) on {model.cfg.device}", soft_wrap=True)
    budget = {} if args.max_heads is REPORT_DEFAULT else {"max_heads": args.max_heads}
    results = replicate(
        model, n=args.n, seed=args.seed, out=args.out, console=console, model_name=name, **budget
    )
    print_summary(results, console)
    print_circuit(results, console)
    words = results["sections"]["setup"]["numbers"]["dataset"]["words"]
    console.print(kept_words_text(words), soft_wrap=True)
    files = ", ".join(str(path) for path in results.get("files", {}).values())
    console.print(f"report written: {files or args.out / 'results.json'}", soft_wrap=True)
    return 0


def print_circuit(results: dict, console: Console) -> None:
    """One table: the circuit that discovery found, by class, with its faithfulness."""
    found = results.get("sections", {}).get("circuit", {}).get("numbers", {})
    circuit = found.get("circuit")
    if not circuit:
        return
    table = Table(
        title=f"circuit found at threshold {found['threshold']:g}: keeps "
        f"{found['faithfulness']:.1%} of the logit difference under mean ablation"
    )
    for col in ("class", "kept at", "heads"):
        table.add_column(col)
    for name, heads in circuit["heads"].items():
        labels = " ".join(str(Head.coerce(h)) for h in heads)
        table.add_row(name, str(circuit["positions"][name]), labels)
    console.print(table)


def find_site(start: Path | None = None) -> Path:
    """The site's entry page, ``streamlit_app/Home.py``, next to the ioi package or in ``start``.

    Raises:
        ValueError: neither place holds it (a non-editable install ships only the package).
    """
    for root in [start] if start else [PACKAGE_PARENT, Path.cwd()]:
        home = root / "streamlit_app" / "Home.py"
        if home.is_file():
            return home.resolve()
    raise ValueError(
        "cannot find streamlit_app/Home.py next to the ioi package or in the current "
        "directory; run from a clone of the repository (pip install -e '.[app]')"
    )


def app_argv(
    home: Path, port: int = 8501, headless: bool = False, host: str = DEFAULT_HOST
) -> list[str]:
    """The command that serves the site: ``python -m streamlit run HOME`` with our options.

    It binds ``host`` only (localhost unless asked otherwise), sends no telemetry (the course
    works offline) and hides Streamlit's Deploy button (``client.toolbarMode minimal``).
    """
    argv = [sys.executable, "-m", "streamlit", "run", str(home), "--server.port", str(port)]
    argv += ["--server.address", host]
    argv += ["--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    if headless:
        argv += ["--server.headless", "true"]
    return argv


class _Terminated(Exception):
    """SIGTERM reached ``ioi app``."""


def _raise_terminated(signum, frame):  # a signal handler: turn SIGTERM into an exception
    raise _Terminated


def _check_resolves(host: str) -> None:
    """Refuse a host name that does not resolve here: Streamlit would fail on it with a traceback."""
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise ValueError(
            f"--host {host!r} does not resolve to an address ({err}); use 127.0.0.1 "
            "(this machine only) or 0.0.0.0 (every interface)"
        ) from None


def cmd_app(args: argparse.Namespace, console: Console) -> int:
    """Serve the site until it exits; Ctrl-C or SIGTERM stops the server too, never orphaned."""
    home = find_site()
    if importlib.util.find_spec("streamlit") is None:
        raise ValueError("streamlit is not installed; pip install -e '.[app]'")
    if not args.host.strip() or any(c.isspace() for c in args.host):
        raise ValueError(f"--host must be an address such as 127.0.0.1, got {args.host!r}")
    _check_resolves(args.host)
    shown = "localhost" if args.host == DEFAULT_HOST else args.host
    console.print(f"serving {home} on http://{shown}:{args.port} (Ctrl-C stops it)", soft_wrap=True)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    server = subprocess.Popen(app_argv(home, args.port, args.headless, args.host))
    try:
        return server.wait()
    except (KeyboardInterrupt, _Terminated):  # Ctrl-C reaches streamlit too; SIGTERM does not
        return _stop(server)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            _stop(server)


def _stop(server) -> int:  # a subprocess.Popen (duck-typed so tests can fake it)
    """Ask the server to stop (SIGTERM), kill it if it has not within ``STOP_TIMEOUT_S``."""
    server.terminate()
    try:
        return server.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        return server.wait()


def print_summary(results: dict, console: Console) -> None:
    perf = results["performance"]
    table = Table(title=f"IOI performance of {results['model']} (N={perf['n_prompts']})")
    for col in ("prompts", "n", "logit diff", "IO > S", "IO top-1", "P(IO)"):
        table.add_column(col, justify="right" if col != "prompts" else "left")
    rows = [("all", perf["n_prompts"], perf["overall"])]
    rows += [(f, "", perf[f]) for f in ("BABA", "ABBA") if f in perf]
    rows += [(f"{t['family']} #{t['template_idx']}", t["n"], t) for t in perf["per_template"]]
    for label, n, s in rows:
        table.add_row(
            label,
            str(n),
            f"{s['logit_diff']:.3f}",
            f"{s['io_over_s']:.1%}",
            f"{s['io_top1']:.1%}",
            f"{s['io_prob']:.3f}",
        )
    console.print(table)
    console.print(f"ABC (corrupted) logit diff: {perf['abc_logit_diff']:.3f}")
    ref = results.get("reference")
    if ref:
        cmp = Table(title="GPT-2 small: ours vs published (Wang et al. 2022)")
        for col in ("figure", "ours", "published", "difference"):
            cmp.add_column(col, justify="right" if col != "figure" else "left")
        for row in ref:
            cmp.add_row(
                row["figure"],
                f"{row['ours']:.3f}",
                f"{row['published']:.3f}",
                f"{row['difference']:+.3f}",
            )
        console.print(cmp)


def main(argv: list[str] | None = None) -> int:
    console = Console()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "replicate":
            return cmd_replicate(args, console)
        if args.command == "app":
            return cmd_app(args, console)
    except (ValueError, OSError) as err:  # user errors: one line, exit 2
        print(f"ioi: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
