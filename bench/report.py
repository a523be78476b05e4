"""results.json's figures as Markdown tables (docs/performance.md uses the same)."""

from __future__ import annotations


def ratios(results: dict) -> dict:
    join = results["join"]["throughput_eps"]
    peer = results["peer_join"]["throughput_eps"]
    kafka = results["kafka_limit"]["consumer_eps"]
    join_marginal = results["join"].get("marginal_s")
    peer_marginal = results["peer_join"].get("marginal_s")
    return {
        "join_vs_peer": round(join / peer, 2) if peer else None,
        # >= 1.0: per record, the join is at least as fast as the course approach.
        "marginal_join_vs_peer": (
            round(peer_marginal / join_marginal, 2) if join_marginal and peer_marginal else None
        ),
        "join_vs_kafka_consumer": round(join / kafka, 4) if kafka else None,
    }


def _n(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def small_table(title: str, rows: list[list[str]]) -> list[str]:
    """A two-column Markdown table headed by `title`, and a blank line."""
    rows = [[title, ""], ["---", "---"], *rows]
    return [*("| " + " | ".join(row) + " |" for row in rows), ""]


def risk_score_rows(score: dict | None) -> list[str]:
    """The risk-score job's own small table and a blank line; none when it did not run."""
    if score is None:
        return []
    title = "the risk-score job (sparkpyriskscore.py)"
    rows = [
        [
            "throughput, rapid step tests/s (start-up excluded)",
            f"**{_n(score['throughput_tps'])}**",
        ],
        [
            "backlog: tests / customers / the app's scores",
            f"{_n(score['tests'])} / {_n(score['customers'])} / {_n(score['app_scores'])}",
        ],
        [
            "scores / checks agreeing with the app's",
            f"{_n(score['scores'])} / {_n(score['agreeing'])} of {_n(score['checks'])}",
        ],
        ["micro-batch time for the backlog, s", _n(score["seconds"], 1)],
        ["wall time, JVM start and exit included, s", _n(score["wall_s"], 1)],
        ["driver peak RSS, MiB", _n(score["driver_peak_rss_mb"])],
        ["state rows at the end of the backlog", _n(score["state_rows"])],
    ]
    return small_table(title, rows)


def pipeline_rows(pipe: dict | None) -> list[str]:
    """`make run`'s own small table and a blank line; none when it did not run."""
    if pipe is None:
        return []
    title = f"`make run`, simulator x{pipe['sim_speed']:g}"
    rows = [
        ["launch to the first record on the output topic, s", _n(pipe["first_output_s"], 1)],
        [
            f"cores, everything it runs, over {_n(pipe['seconds'])} s of steady state",
            f"**{_n(pipe['cores'], 3)}**",
        ],
        [
            "the same by process",
            ", ".join(f"{kind} {_n(cores, 3)}" for kind, cores in pipe["cores_by_process"].items()),
        ],
        [
            "RSS, everything it runs, MiB (mean / max)",
            f"**{_n(pipe['rss_mb'])}** / {_n(pipe['rss_max_mb'])}",
        ],
        [
            f"app's score to its output record, p50 / p99 / max, ms ({_n(pipe['scores'])} scores)",
            " / ".join(
                [
                    _n(pipe["publish_to_output_p50_ms"]),
                    f"**{_n(pipe['publish_to_output_p99_ms'])}**",
                    _n(pipe["publish_to_output_max_ms"]),
                ]
            ),
        ],
    ]
    return small_table(title, rows)


def wrappers_rows(idle: dict | None) -> list[str]:
    """The idle wrappers' small table and a blank line; none when they did not run."""
    if idle is None:
        return []
    title = "the three card wrappers side by side, idle"
    rows = [
        [
            f"cores, {idle['processes']} processes, over {_n(idle['seconds'])} s",
            f"**{_n(idle['cores'], 3)}**",
        ],
        [
            "RSS, MiB (mean / max)",
            f"**{_n(idle['rss_mb'])}** / {_n(idle['rss_max_mb'])}",
        ],
    ]
    return small_table(title, rows)


def app_rows(app: dict | None) -> list[str]:
    """The app section's own small table and a blank line; none when it did not run."""
    if app is None:
        return []

    def spread(kind: str) -> str:
        q = app[kind]
        return f"{_n(q['p50_ms'])} / **{_n(q['p99_ms'])}** / {_n(q['max_ms'])}"

    title = (
        f"the app: {_n(app['users'])} users, {_n(app['tests'])} tests, "
        f"{app['processes']} processes, one Redis"
    )
    rows = [
        ["launch to /health up, s (each process)", " / ".join(_n(s, 2) for s in app["start_s"])],
        [
            "index pass over the older data, s; /health's slowest answer meanwhile, ms",
            f"{_n(app['index_pass_s'], 1)}; {_n(app['health_max_ms_during_pass'])}",
        ],
        [
            "RSS per process, MiB: after start / after the pass / peak",
            " / ".join(
                ", ".join(_n(v) for v in app[k])
                for k in ("rss_after_start_mb", "rss_after_index_pass_mb", "rss_peak_mb")
            ),
        ],
        [
            "login one after another, p50 / p99 / max, ms (argon2's own time)",
            f"{spread('login_alone')} ({_n(app['argon2_ms'])})",
        ],
        [
            f"under load: {app['clients']} caregivers, {_n(app['requests_per_s'])} requests/s",
            "",
        ],
        ["login, p50 / p99 / max, ms", spread("login")],
        ["timer page, p50 / p99 / max, ms", spread("timer_page")],
        ["customer page, p50 / p99 / max, ms", spread("customer_page")],
        ["test posted, p50 / p99 / max, ms", spread("post_test")],
    ]
    if "viewers" in app:
        rows += [
            [
                "live graphs with every point / viewers (points)",
                f"{app['viewers_with_every_point']} / {app['viewers']} ({app['points']})",
            ],
            [
                "record to viewer, p50 / p99 / max, ms",
                f"{_n(app['point_p50_ms'])} / **{_n(app['point_p99_ms'])}** / "
                f"{_n(app['point_max_ms'])}",
            ],
        ]
    return small_table(title, rows)


def table(results: dict) -> str:
    join, peer = results["join"], results["peer_join"]
    kafka, lat = results["kafka_limit"], results["latency"]
    m, r = results["machine"], results["ratios"]
    trickle = join["trickle"]
    rate = _n(lat["rate_eps"])
    behind = ""
    if lat["joined"] < lat["scores"]:
        behind = f" ({lat['joined']:,} of {lat['scores']:,} joined in time)"
    rows = [
        ["", "this project's join", "the course approach (peer)", "Kafka itself"],
        ["---", "---", "---", "---"],
        [
            "throughput, risk scores/s (start-up excluded)",
            f"**{_n(join['throughput_eps'])}**",
            f"**{_n(peer['throughput_eps'])}**",
            f"consumer {_n(kafka['consumer_eps'])} records/s",
        ],
        [
            "backlog: risk scores / customers",
            f"{_n(join['events'])} / {_n(join['customers'])}",
            f"{_n(peer['events'])} / {_n(peer['customers'])}",
            f"{_n(kafka['consumer_records'])} records read",
        ],
        ["output records", _n(join["output_records"]), _n(peer["output_records"]), "-"],
        [
            "micro-batch time for the backlog, s",
            _n(join["seconds"], 1),
            _n(peer["seconds"], 1),
            "-",
        ],
        [
            "wall time, JVM start and exit included, s",
            _n(join["wall_s"], 1),
            _n(peer["wall_s"], 1),
            "-",
        ],
        [
            "the backlog's time beyond an empty-topic run, s",
            _n(join.get("marginal_s"), 1),
            _n(peer.get("marginal_s"), 1),
            "-",
        ],
        ["start to first output, data waiting, s", _n(results["startup_s"], 1), "-", "-"],
        [
            f"driver CPU per micro-batch, a score every {trickle['interval_ms'] / 1000:g} s, s",
            f"**{_n(trickle['cpu_s_per_batch'], 3)}**",
            "-",
            "-",
        ],
        [
            f"latency p50 / p99 / max at {rate} scores/s, ms",
            f"**{_n(lat['p50_ms'])} / {_n(lat['p99_ms'])} / {_n(lat['max_ms'])}**" + behind,
            "-",
            f"round trip p50 {_n(kafka['roundtrip_p50_ms'])}, p99 {_n(kafka['roundtrip_p99_ms'])}",
        ],
        [
            f"the same after the first {lat['warmup_s']} s (JIT warm-up), p50 / p99, ms",
            f"**{_n(lat['steady_p50_ms'])} / {_n(lat['steady_p99_ms'])}**",
            "-",
            "-",
        ],
        [
            "driver peak RSS, MiB",
            _n(results["driver_peak_rss_mb"]),
            _n(peer["driver_peak_rss_mb"]),
            "-",
        ],
        ["state rows at the end of the backlog", _n(join.get("state_rows")), "-", "-"],
    ]
    return "\n".join(
        [
            *("| " + " | ".join(row) + " |" for row in rows),
            "",
            *risk_score_rows(results.get("risk_score")),
            *pipeline_rows(results.get("pipeline")),
            *wrappers_rows(results.get("wrappers")),
            *app_rows(results.get("app")),
            f"join / peer: **{_n(r['join_vs_peer'], 2)}x**; per record (marginal, peer / join): "
            f"**{_n(r.get('marginal_join_vs_peer'), 2)}x**; "
            f"join / Kafka consumer limit: **{_n(r['join_vs_kafka_consumer'], 3)}x**",
            "",
            f"machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, Spark {m['spark']}, "
            f"Kafka {m['kafka']}, load average at start {m['load_average_at_start']}, {m['date']}",
        ]
    )
