"""Inclusive time per function of a sampling profile, from py-spy's raw (collapsed-stack) output.

    py-spy record -p PID -d 60 -r 50 -f raw -o profile.txt --nonblocking   # py-spy: pip install py-spy
    python benchmarks/profile_summary.py profile.txt --top 30

Each line of the raw file is ``frame;frame;...;frame COUNT``, outermost frame first; a
function's share is the fraction of samples whose stack contains it (once per sample, however
deep the recursion).
"""

import argparse
from collections import Counter


def frame_name(frame):
    """``function (file.py:line)`` -> ``function (file.py)``: one row per function, not per line."""
    name, _, where = frame.strip().partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


def inclusive_shares(lines):
    """(samples, [(share, function), ...]) with the largest share first."""
    total, counts = 0, Counter()
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for name in {frame_name(f) for f in stack.split(";")}:
            counts[name] += int(count)
    return total, [(n / total, name) for name, n in counts.most_common()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("raw", help="py-spy record -f raw output")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    with open(args.raw, encoding="utf-8") as f:
        total, shares = inclusive_shares(f)
    print(f"{total} samples")
    for share, name in shares[: args.top]:
        print(f"{100 * share:5.1f}%  {name}")


if __name__ == "__main__":
    main()
