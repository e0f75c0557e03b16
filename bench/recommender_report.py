"""What bench/recommender.py prints after its rows: each worker count's table, the service
with several workers beside one process (same run, same client), issue #17's targets and the
Feast peer's ratios."""

from __future__ import annotations

from load_generator import TABLE_HEAD, Figures

SERVICE_ROWS = ("gRPC cache hit", "HTTP cache hit", "gRPC cache miss", "HTTP cache miss")


def found(rows: list[Figures]) -> dict[tuple[str, int], Figures]:
    return {(f.name, f.concurrency): f for f in rows}


def issue_17_targets(by_workers: dict[int, list[Figures]]) -> list[str]:
    """Issue #17's targets beside this run's figures: the latencies of the most workers
    measured, the throughput at concurrency 64 of those over one process."""
    most = max(by_workers)
    rows = found(by_workers[most])
    single = found(by_workers.get(1, []))
    label = f"{most} worker{'s' if most > 1 else ''}"

    def check(name: str, concurrency: int, limit_ms: float) -> str:
        figures = rows.get((name, concurrency))
        if figures is None:
            return f"{name} p99 at concurrency {concurrency}: not measured"
        verdict = "met" if figures.p99 <= limit_ms else "not met"
        return (
            f"{name} p99 at concurrency {concurrency}, {label}: {figures.p99:.2f} ms "
            f"(target <= {limit_ms:g} ms): {verdict}"
        )

    lines = [check("gRPC cache hit", 16, 3)]
    for door in ("gRPC", "HTTP"):
        multi, one = rows.get((f"{door} cache hit", 64)), single.get((f"{door} cache hit", 64))
        if multi is None or one is None or most == 1:
            lines.append(
                f"{door} cache hit at concurrency 64: needs one process and several workers "
                "in the same run (--workers 1 N)"
            )
            continue
        ratio = multi.rps / one.rps
        lines.append(
            f"{door} cache hit at concurrency 64: {multi.rps:,.0f} requests/s with {label}, "
            f"{one.rps:,.0f} with one process = {ratio:.2f}x (target >= 1.7x): "
            f"{'met' if ratio >= 1.7 else 'not met'}"
        )
    lines += [check(f"{door} cache miss", 1, 10) for door in ("gRPC", "HTTP")]
    return lines


def worker_ratios(by_workers: dict[int, list[Figures]]) -> list[str]:
    """Each service row with N workers over the same row with one process."""
    single = found(by_workers.get(1, []))
    lines = []
    for workers, rows in sorted(by_workers.items()):
        if workers == 1 or not single:
            continue
        for (name, concurrency), multi in found(rows).items():
            one = single.get((name, concurrency))
            if name in SERVICE_ROWS and one is not None:
                lines.append(
                    f"{name}, concurrency {concurrency}: {workers} workers / one process: "
                    f"{multi.rps / one.rps:.2f}x the requests/s "
                    f"({multi.rps:,.0f} / {one.rps:,.0f}), "
                    f"p99 {multi.p99:.2f} / {one.p99:.2f} ms"
                )
    return lines


def peer_ratios(rows: list[Figures]) -> list[str]:
    """The service's HTTP cache hit over the Feast peer, at each concurrency both ran."""
    by_name = found(rows)
    lines = []
    for (name, concurrency), feast in by_name.items():
        ours = by_name.get(("HTTP cache hit", concurrency))
        if name.startswith("Feast") and ours is not None:
            lines.append(
                f"concurrency {concurrency}: HTTP cache hit / Feast: "
                f"{ours.rps / feast.rps:.2f}x the requests/s ({ours.rps:,.0f} / {feast.rps:,.0f}), "
                f"p99 {ours.p99:.2f} / {feast.p99:.2f} ms = {ours.p99 / feast.p99:.2f}x"
            )
    return lines


def print_table(title: str, rows: list[Figures]) -> None:
    print(f"\n{title}")
    print(TABLE_HEAD)
    for figures in rows:
        print(figures.row())


def print_summary(by_workers: dict[int, list[Figures]]) -> None:
    print("\ntargets: cache-hit p99 <= 5 ms, miss p99 <= 50 ms")
    print("issue #17 targets:")
    for line in issue_17_targets(by_workers):
        print(f"- {line}")
    ratios = worker_ratios(by_workers)
    if ratios:
        print("several workers beside one process (the same client, the same run):")
        print(*(f"- {line}" for line in ratios), sep="\n")
    for workers, rows in sorted(by_workers.items()):
        peer = peer_ratios(rows)
        if peer:
            print(
                f"the peer (Feast's feature server, one worker, the same Redis and users) "
                f"beside the service with {workers} worker{'s' if workers > 1 else ''}:"
            )
            print(*(f"- {line}" for line in peer), sep="\n")
