"""`python -m bench.accuracy collect|report|tune`: see the package's docstring."""

from __future__ import annotations

import argparse

from bench import accuracy
from bench.accuracy.collect import collect
from bench.accuracy.report import report
from bench.accuracy.rows import LIVE
from bench.accuracy.tune import tune


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.accuracy", description=(accuracy.__doc__ or "").splitlines()[0]
    )
    steps = parser.add_subparsers(dest="step", required=True)
    draw = steps.add_parser("collect", help="draw and store samples from real vLLM")
    draw.add_argument(
        "--url", help="a running gateway in front of vLLM, with no verifier; default: start all"
    )
    draw.add_argument("--prm-url", help="with --url: a running gateway with the PRM as `prm`")
    draw.add_argument("--per-tier", type=int, default=70, help="problems per tier")
    draw.add_argument("--concurrency", type=int, default=4)
    draw.add_argument("--live", type=int, default=30, help="problems the live subset runs")
    draw.add_argument("--live-file", default=str(LIVE), help="where the live subset goes")
    draw.add_argument(
        "--no-particles",
        dest="particles",
        action="store_false",
        help="skip the particle-filtering rows (served on every problem, with the PRM)",
    )
    show = steps.add_parser("report", help="replay every row on the stored samples")
    show.add_argument("--plots", help="write the PNG plots to this directory")
    steps.add_parser("tune", help="replay a grid of auto policies")
    args = parser.parse_args()
    {"collect": collect, "report": report, "tune": tune}[args.step](args)


if __name__ == "__main__":
    main()
