#!/usr/bin/env python3
"""The graph benchmark's questions asked of Kuzu, on the same graph.

    pip install kuzu
    python3 benches/tools/kuzu_graph.py            # ECSDB_BENCH_QUICK=1 for 10,000 nodes

Builds the graph `cargo bench -p ecsdb-bench --bench graph` builds (same
xorshift sequence: 100,000 nodes, 24 links each, self-links and duplicates
dropped), loads it with COPY FROM, and times k-hop distinct-neighbour counts
from the same start nodes, printing medians and the counts (which must equal
the Rust benchmark's, checked against SQLite there).
"""
import csv
import os
import statistics
import tempfile
import time

import kuzu

MASK = (1 << 64) - 1


def edges(nodes, degree):
    x = 0x2545F4914F6CDD1D
    out = set()
    for a in range(nodes):
        for _ in range(degree):
            x ^= (x << 13) & MASK
            x ^= x >> 7
            x ^= (x << 17) & MASK
            b = x % nodes
            if b != a:
                out.add((a, b))
    return sorted(out)


def main():
    quick = "ECSDB_BENCH_QUICK" in os.environ
    nodes, degree, starts = (10_000, 24, 10) if quick else (100_000, 24, 30)
    es = edges(nodes, degree)
    print(f"graph: {nodes} nodes, {len(es)} edges")
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "nodes.csv"), "w", newline="") as f:
            csv.writer(f).writerows((n,) for n in range(nodes))
        with open(os.path.join(d, "edges.csv"), "w", newline="") as f:
            csv.writer(f).writerows(es)
        db = kuzu.Database(os.path.join(d, "db"))
        conn = kuzu.Connection(db)
        t0 = time.perf_counter()
        conn.execute("CREATE NODE TABLE Node(id INT64, PRIMARY KEY (id))")
        conn.execute("CREATE REL TABLE Link(FROM Node TO Node)")
        conn.execute(f"COPY Node FROM '{os.path.join(d, 'nodes.csv')}'")
        conn.execute(f"COPY Link FROM '{os.path.join(d, 'edges.csv')}'")
        print(f"kuzu load: {time.perf_counter() - t0:.2f} s")
        pick = [(i * 7919) % nodes for i in range(starts)]
        print(f"{'query':<28} {'kuzu':>12}  counts")
        for hops in (1, 2, 3):
            q = (
                f"MATCH (a:Node)-[:Link*1..{hops}]->(b:Node) WHERE a.id = $s AND b.id <> $s "
                "RETURN count(DISTINCT b.id)"
            )
            times, counts = [], []
            for s in pick:
                t = time.perf_counter()
                r = conn.execute(q, {"s": s})
                n = r.get_next()[0]
                times.append(time.perf_counter() - t)
                counts.append(n)
            med = statistics.median(times) * 1e6
            shown = f"{med / 1000:.2f} ms" if med >= 1000 else f"{med:.1f} us"
            print(f"{str(hops) + '-hop neighbour count':<28} {shown:>12}  {counts[:3]}...")


if __name__ == "__main__":
    main()
