"""``vidseg bench``: measure speed and memory on this machine; write docs/benchmarks.md and its JSON."""

from __future__ import annotations

import argparse

from vidseg.constants import DTYPE_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure speed, memory and evaluator time; write Markdown + JSON",
        description="Measure seconds per frame of every method that runs without a checkpoint, the peak memory "
        "of `vidseg segment` against video length and the evaluator's time on the DAVIS 2017 conformance set; "
        "print them as measured, then write a Markdown report and the raw numbers as JSON.",
    )
    parser.add_argument("--out", default="docs/benchmarks.md", metavar="FILE.md",
                        help="Markdown report (default: docs/benchmarks.md)")
    parser.add_argument("--json", default="docs/benchmarks.json", metavar="FILE.json",
                        help="raw results (default: docs/benchmarks.json)")
    parser.add_argument("--methods", nargs="+", metavar="NAME",
                        help="methods to time (default: every method that builds without a checkpoint)")
    parser.add_argument("--sizes", nargs="+", metavar="HxW", help="input frame sizes (default: 256x448 480x854)")
    parser.add_argument("--objects", type=int, nargs="+", metavar="N", help="numbers of objects (default: 1 3)")
    parser.add_argument("--frames", type=int, metavar="N", help="timed frames per configuration (default: 30)")
    parser.add_argument("--warmup", type=int, metavar="N", help="untimed frames before them (default: 2)")
    parser.add_argument("--lengths", type=int, nargs="+", metavar="N",
                        help="video lengths of the segment memory test (default: 200 1000 2000)")
    parser.add_argument("--conformance", metavar="DIR",
                        help="DAVIS 2017 conformance set (default: $VIDSEG_SHARED/conformance/davis2017, else "
                        "../shared/conformance/davis2017)")
    parser.add_argument("--device", default="cpu", help="torch device of the network methods: cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                        help="network dtype (default auto: bfloat16 where the device runs it natively, else float32)")
    parser.add_argument("--compile", action="store_true",
                        help="run the network methods' per-frame step through torch.compile")
    parser.add_argument("--threads", type=int, metavar="N", help="torch and OpenCV threads (default: theirs)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 128x224, 3 timed frames, lengths 20 40, no conformance set unless given")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidseg.bench import command_line, make_settings, run_bench, write_results

    settings = make_settings(
        quick=args.quick, methods=args.methods, sizes=args.sizes, objects=args.objects, frames=args.frames,
        warmup=args.warmup, lengths=args.lengths, conformance=args.conformance, device=args.device,
        dtype=args.dtype, compile=args.compile, threads=args.threads,
    )
    results = run_bench(settings, command_line(args.argv), report=lambda line: print(line, flush=True))
    write_results(results, args.out, args.json)
    print(f"\nwrote {args.out} and {args.json} ({results['elapsed_s']:.0f} s)")
    return 0
