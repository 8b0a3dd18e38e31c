#!/usr/bin/env python3
"""Herald benchmark driver (run by bench/run.sh, i.e. `make bench`).

Runs the four measurements of MISSION.md "Targets" side by side on this
machine, with the C load generator build/bench/loadgen, and prints a table.
QUICK=1: one short repetition of each (a smoke run). REPS=N overrides the
repetition count. It is a measurement, not a test: it exits 0 whatever the
numbers are (non-zero only if something could not run at all).
"""
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERALDD = os.environ.get("HERALDD") or os.path.join(ROOT, "build", "bin", "heraldd")
LOADGEN = os.path.join(ROOT, "build", "bench", "loadgen")
NODE_ECHO = os.path.join(ROOT, "bench", "node_echo.js")
QUICK = os.environ.get("QUICK", "0") not in ("", "0")
REPS = int(os.environ.get("REPS", "1" if QUICK else "3"))
SECRET = "herald-bench-secret-0123456789abcdef"  # >= 32 bytes
API_KEY = "herald-bench-api-key"
ENV = dict(os.environ, HERALD_JWT_SECRET=SECRET, HERALD_API_KEY=API_KEY)

# durations (seconds): (warm-up, measured)
ECHO_T = (1, 2) if QUICK else (2, 8)
ECHO1_T = (1, 1) if QUICK else (1, 4)
IDLE_N = 2000 if QUICK else 10000
ROUTE_N = 2000 if QUICK else 10000
ROUTE_T = (1, 2) if QUICK else (2, 4)
LAT_RATE = 150000  # events/s: half of the 300,000/s target
HS_T = (1, 2) if QUICK else (1, 4)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    """heraldd or the Node echo server, on a fresh port, stderr drained."""

    def __init__(self, kind, extra=()):
        self.port = free_port()
        if kind == "herald":
            cmd = [HERALDD, "--listen", "127.0.0.1:%d" % self.port, "--agent", "none",
                   "--log-level", "warn", *extra]
        else:
            cmd = ["node", NODE_ECHO, str(self.port)]
        self.kind = kind
        self.p = subprocess.Popen(cmd, env=ENV, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.errlines = []
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.p.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("%s did not start: %s" % (kind, "".join(self.errlines[-5:])))

    def _drain(self):
        for line in self.p.stderr:
            self.errlines.append(line)
            del self.errlines[:-50]

    def rss_kb(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_s(self):
        with open("/proc/%d/stat" % self.p.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def parse(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def loadgen(*args, timeout=180):
    r = subprocess.run([LOADGEN, *map(str, args)], env=ENV, capture_output=True, text=True,
                       timeout=timeout)
    lines = [l for l in r.stdout.splitlines() if "=" in l and not l.startswith("READY")]
    if r.returncode != 0 or not lines:
        raise RuntimeError("loadgen %s failed: %s %s" % (args[0], r.stdout, r.stderr))
    return parse(" ".join(lines))


class Sub:
    """A `loadgen sub` process in the background; waits for its READY line."""

    def __init__(self, port, conns, users, base=0, hold=False, warmup=0, duration=0):
        args = [LOADGEN, "sub", "--port", port, "--conns", conns, "--users", users,
                "--user-base", base]
        if hold:
            args.append("--hold")
        else:
            args += ["--warmup", warmup, "--duration", duration]
        self.p = subprocess.Popen(list(map(str, args)), env=ENV, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("sub failed: %s %s" % (line, self.p.stderr.read()))
        self.ready = parse(line)

    def result(self, timeout=120):
        out, err = self.p.communicate(timeout=timeout)
        lines = [l for l in out.splitlines() if "=" in l]
        if not lines:
            raise RuntimeError("sub gave no result: %s" % err)
        return parse(" ".join(lines))

    def release(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=30)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


# ---- 1. echo ---------------------------------------------------------------------------

def echo_once(kind, window, t):
    srv = Server("herald", ["--workers", "2", "--echo-path", "/echo"]) if kind == "herald" \
        else Server("node")
    try:
        r = loadgen("echo", "--port", srv.port, "--path", "/echo", "--conns", 100,
                    "--window", window, "--size", 20, "--warmup", t[0], "--duration", t[1])
    finally:
        srv.stop()
    if r.get("open", 0) < 100 or r.get("closed", 0) > 0:
        log("  note: %s echo: only %d of 100 connections open" % (kind, r.get("open", 0)))
    return r["msgs_per_s"]


def bench_echo(window, t):
    h, n, ratios = [], [], []
    for rep in range(REPS):
        order = ["herald", "node"] if rep % 2 == 0 else ["node", "herald"]
        got = {}
        for kind in order:
            got[kind] = echo_once(kind, window, t)
        h.append(got["herald"])
        n.append(got["node"])
        ratios.append(got["herald"] / got["node"] if got["node"] else float("nan"))
        log("  echo window=%d rep %d: herald %.0f msg/s, node %.0f msg/s, ratio %.2f"
            % (window, rep + 1, got["herald"], got["node"], ratios[-1]))
    return med(h), med(n), med(ratios), ratios


# ---- 2. idle memory -------------------------------------------------------------------------

def bench_idle(per_user):
    """N authenticated idle connections, per_user connections per user, opened by two
    client processes (N/2 each). Returns (bytes/conn overall, bytes/conn of the second
    half), from heraldd's VmRSS."""
    srv = Server("herald", ["--workers", "2"])
    subs = []
    try:
        time.sleep(0.3)
        half = IDLE_N // 2
        users_half = max(1, half // per_user)
        rss0 = srv.rss_kb()
        subs.append(Sub(srv.port, half, users_half, base=0, hold=True))
        time.sleep(0.5)
        rss1 = srv.rss_kb()
        subs.append(Sub(srv.port, half, users_half, base=users_half, hold=True))
        time.sleep(0.5)
        rss2 = srv.rss_kb()
        welcomed = sum(int(s.ready.get("welcomed", 0)) for s in subs)
    finally:
        for s in subs:
            s.release()
        srv.stop()
    total = (rss2 - rss0) * 1024 / welcomed
    marginal = (rss2 - rss1) * 1024 / max(1, welcomed - half)
    log("  idle %d/user: %d welcomed, VmRSS %d -> %d -> %d kB: %.0f B/conn (second half %.0f)"
        % (per_user, welcomed, rss0, rss1, rss2, total, marginal))
    return total, marginal, welcomed, rss0, rss2


# ---- 3. per-user routing ---------------------------------------------------------------------

def route_once(srv, rate, batch, pub_conns, per_user=1):
    w, d = ROUTE_T
    sub = Sub(srv.port, ROUTE_N, ROUTE_N, warmup=w, duration=d)
    cpu0 = srv.cpu_s()
    t0 = time.time()
    pub = loadgen("pub", "--port", srv.port, "--users", ROUTE_N, "--api-key", API_KEY,
                  "--conns", pub_conns, "--batch", batch, "--rate", rate,
                  "--per-user", per_user, "--duration", w + d + 1.5)
    elapsed = time.time() - t0
    cpu = (srv.cpu_s() - cpu0) / elapsed
    r = sub.result()
    r["sub_cpu"] = r.get("loadgen_cpu_s", 0) / (elapsed + 1)
    r["pub_cpu"] = pub.get("loadgen_cpu_s", 0) / elapsed
    r["pub_sent_per_s"] = pub["sent_per_s"]
    r["pub_errors"] = pub["errors"]
    r["herald_cpu"] = cpu
    return r


def route_series(srv, label, rate, batch, pub_conns, per_user):
    out = []
    for rep in range(REPS):
        r = route_once(srv, rate, batch, pub_conns, per_user)
        out.append(r)
        log("  %s rep %d: %.0f deliveries/s (publisher sent %.0f/s), p50 %.2f p90 %.2f "
            "p99 %.2f p99.9 %.2f ms, CPU cores: heraldd %.2f, clients %.2f, publisher %.2f; "
            "welcomed %d, closed %d"
            % (label, rep + 1, r["events_per_s"], r["pub_sent_per_s"], r["p50_ms"],
               r["p90_ms"], r["p99_ms"], r["p999_ms"], r["herald_cpu"], r["sub_cpu"],
               r["pub_cpu"], r["welcomed"], r["closed"]))
    return {k: med([r[k] for r in out]) for k in
            ("events_per_s", "pub_sent_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms",
             "herald_cpu", "sub_cpu", "pub_cpu")}


def bench_route():
    """One heraldd; every repetition opens ROUTE_N fresh connections (1 per user).
    max: closed loop, 4 publishers, batches of 1000, each event to the next user
    (one frame per connection per batch: the worst case, a write per delivery);
    max-stream: the same with 10 consecutive events per user (a streaming agent);
    lat150k: paced at 150,000 events/s in batches of 100 (the target's half rate);
    lat150k10: the same with 10 consecutive events per user;
    lathalf: paced at half the measured max, batches of 100."""
    srv = Server("herald", ["--workers", "2"])
    res = {}
    try:
        res["max"] = route_series(srv, "max, 1 event/user/batch", 0, 1000, 4, 1)
        res["max10"] = route_series(srv, "max, 10 events/user/batch", 0, 1000, 4, 10)
        res["lat150k"] = route_series(srv, "paced %d/s" % LAT_RATE, LAT_RATE, 100, 4, 1)
        res["lat150k10"] = route_series(srv, "paced %d/s, 10 events/user" % LAT_RATE,
                                        LAT_RATE, 100, 4, 10)
        half = max(1000, int(res["max"]["events_per_s"] / 2 / 1000) * 1000)
        res["lathalf"] = route_series(srv, "paced %d/s" % half, half, 100, 4, 1)
        res["half_rate"] = half
    finally:
        srv.stop()
    return res


# ---- 4. handshakes ---------------------------------------------------------------------------

def bench_hs():
    out = []
    for rep in range(REPS):
        srv = Server("herald", ["--workers", "2"])
        try:
            r = loadgen("hs", "--port", srv.port, "--conc", 64, "--users", 10000,
                        "--warmup", HS_T[0], "--duration", HS_T[1])
        finally:
            srv.stop()
        out.append(r)
        log("  handshakes rep %d: %.0f/s (failed %d)" % (rep + 1, r["hs_per_s"], r["failed"]))
    return out


# ---- main --------------------------------------------------------------------------------------

def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return "nproc=%d, CPU %s, kernel %s" % (os.cpu_count(), model, os.uname().release)


def main():
    for path in (HERALDD, LOADGEN):
        if not os.access(path, os.X_OK):
            log("missing %s (run `make bench`)" % path)
            return 1
    started = time.time()
    log("Herald benchmark (%s, %d repetition(s)); %s" % ("QUICK" if QUICK else "full", REPS,
                                                          machine()))
    rows = []

    log("1. echo, 100 connections, 20-byte messages, window 32 in flight per connection")
    h, n, ratio, ratios = bench_echo(32, ECHO_T)
    rows.append(("echo msg/s, 100 conns, window 32: heraldd --workers 2", "%.0f" % h, ""))
    rows.append(("echo msg/s, 100 conns, window 32: Node ws", "%.0f" % n, ""))
    rows.append(("echo ratio heraldd/Node (median of per-run ratios)",
                 "%.2fx" % ratio, "target >= 1.9x: %s" % ("met" if ratio >= 1.9 else "MISSED")))
    log("1b. echo, window 1 (no pipelining: one message in flight per connection)")
    h1, n1, ratio1, _ = bench_echo(1, ECHO1_T)
    rows.append(("echo msg/s, window 1: heraldd / Node ws", "%.0f / %.0f" % (h1, n1),
                 "ratio %.2fx" % ratio1))

    log("2. idle authenticated connections (%d, two client processes)" % IDLE_N)
    for per_user in (1, 10):
        total, marginal, welcomed, r0, r2 = bench_idle(per_user)
        rows.append(("idle conn memory, %d conn/user (%d conns)" % (per_user, welcomed),
                     "%.0f B/conn" % total,
                     "second half %.0f B/conn; target <= 512 B: %s"
                     % (marginal, "met" if total <= 512 else "MISSED")))

    log("3. per-user routing, %d connections (1 per user), publish API batches" % ROUTE_N)
    rt = bench_route()
    mx, mx10 = rt["max"], rt["max10"]
    rows.append(("routing deliveries/s, max, batches of 1000, 1 event/user/batch",
                 "%.0f" % mx["events_per_s"],
                 "target >= 300000: %s; CPU heraldd %.2f, clients %.2f, publisher %.2f"
                 % ("met" if mx["events_per_s"] >= 300000 else "MISSED", mx["herald_cpu"],
                    mx["sub_cpu"], mx["pub_cpu"])))
    rows.append(("  latency at max (closed loop: queueing, Little's law) p50 / p99",
                 "%.0f / %.0f ms" % (mx["p50_ms"], mx["p99_ms"]), ""))
    rows.append(("routing deliveries/s, max, batches of 1000, 10 events/user/batch",
                 "%.0f" % mx10["events_per_s"],
                 "heraldd %.2f cores" % mx10["herald_cpu"]))
    for key, rate, shape in (("lat150k", LAT_RATE, "1 event/user"),
                             ("lat150k10", LAT_RATE, "10 events/user"),
                             ("lathalf", rt["half_rate"], "1 event/user")):
        r = rt[key]
        ok = r["p99_ms"] < 2 and r["events_per_s"] >= 0.95 * rate
        rows.append(("routing paced at %d/s (batches of 100, %s): delivered/s" % (rate, shape),
                     "%.0f" % r["events_per_s"],
                     "publisher managed %.0f/s" % r["pub_sent_per_s"]))
        rows.append(("  publish-to-receive p50 / p99 / p99.9",
                     "%.2f / %.2f / %.2f ms" % (r["p50_ms"], r["p99_ms"], r["p999_ms"]),
                     "target p99 < 2 ms at the rate: %s" % ("met" if ok else "MISSED")))

    log("4. handshakes with JWT verification (64 concurrent short connections)")
    hs = med([r["hs_per_s"] for r in bench_hs()])
    rows.append(("handshakes/s (upgrade + JWT + welcome, then close)", "%.0f" % hs,
                 "target >= 10000: %s" % ("met" if hs >= 10000 else "MISSED")))

    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    print()
    print("Herald benchmark, %s, %d repetition(s), medians; %s"
          % ("QUICK" if QUICK else "full", REPS, machine()))
    print("-" * (w + v + 40))
    for name, val, note in rows:
        print("%-*s  %*s  %s" % (w, name, v, val, note))
    print("-" * (w + v + 40))
    print("(%.0f s)" % (time.time() - started))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a measurement: report, don't fail the build
        log("benchmark aborted: %s" % e)
        sys.exit(0)
