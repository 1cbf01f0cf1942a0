"""Start-up time of the `keras-resvit` command: wall time of fresh processes.

Each command runs in a new Python process (as a user's shell starts it); the figure is the
median of `--runs` runs. `import keras_resvit` is timed beside the commands: what every
command pays before it parses its arguments.

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --backend jax --runs 5
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "keras-resvit --help": ["-m", "keras_resvit.cli", "--help"],
    "keras-resvit list": ["-m", "keras_resvit.cli", "list"],
    "keras-resvit info resnet20": ["-m", "keras_resvit.cli", "info", "resnet20"],
    'python -c "import keras_resvit"': ["-c", "import keras_resvit"],
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default=None)
    parser.add_argument("--runs", type=int, default=3, help="runs per command (default: 3)")
    return parser.parse_args()


def wall_seconds(arguments, env):
    """Seconds from starting the process to its exit; raises if the command fails."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *arguments], env=env, check=True, capture_output=True, timeout=600
    )
    return time.perf_counter() - start


def main():
    args = parse_args()
    env = dict(os.environ)
    if args.backend:
        env["KERAS_BACKEND"] = args.backend
    backend = env.get("KERAS_BACKEND", "tensorflow (default)")
    print(f"backend {backend}, median of {args.runs} runs, {os.cpu_count()} cores visible")
    print(f"| {'command':<32} | seconds |")
    print(f"|{'-' * 34}|---------|")
    for label, arguments in COMMANDS.items():
        times = [wall_seconds(arguments, env) for _ in range(args.runs)]
        print(f"| {label:<32} | {statistics.median(times):7.2f} |")


if __name__ == "__main__":
    main()
