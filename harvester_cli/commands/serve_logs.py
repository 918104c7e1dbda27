import click

from harvester_cli.commands import pass_globals


@click.command("serve-logs", epilog="""Examples:

  harvester-cli serve-logs --host 0.0.0.0 --port 8080

  curl -s http://127.0.0.1:8080/metrics | grep harvester_cli_workers   # what Prometheus scrapes

  harvester-cli --json serve-logs --port 0   # a free port; the first line of output says which""")
@click.option("--host", metavar="ADDRESS", help="Address to listen on (default: [log_server] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: [log_server] port, else log_url's, else 8080).")
@click.option("--prefix", metavar="PATH", help="URL path of the log tree (default: the path of log_url, e.g. /logs/).")
@pass_globals
def command(g, host, port, prefix):
    """Serve the log directory read-only over HTTP until interrupted: GET and HEAD only, robots.txt denies
    crawlers, nothing outside the tree (symlinks resolved), command logs and hidden files not served.
    Worker log URLs sent to PanDA (log_url + path) point here. Also /status, an HTML page of what the
    workers do (tables and 24-hour charts from the state database), and /metrics for a Prometheus that
    scrapes directly. Slow and idle clients cost a socket, not a thread ([log_server] max_connections,
    threads, header_timeout, idle_timeout).
    """
    import signal
    import sys

    from harvester_cli.site.logs import make_dirs
    from harvester_cli.site.logserver import LogServer, port_from, prefix_from
    from harvester_cli.steps.monitor import Pages

    config = g.config()
    settings = config.log_server
    host = host or settings.host
    port = port if port is not None else (settings.port or port_from(config.log_url))
    make_dirs(config.logs)
    prefix = prefix or prefix_from(config.log_url)
    pages = Pages(g.instance(), prefix if prefix.endswith("/") else prefix + "/")
    try:
        server = LogServer(config.logs, host, port, prefix,
                           pages={"/status": ("text/html; charset=utf-8", pages.status),
                                  "/metrics": ("text/plain; version=0.0.4; charset=utf-8", pages.metrics)},
                           max_connections=settings.max_connections, threads=settings.threads,
                           header_timeout=settings.header_timeout, idle_timeout=settings.idle_timeout)
    except OSError as exc:
        from harvester_cli.errors import ConfigError

        raise ConfigError(f"serve-logs: cannot listen on {host}:{port}: {exc.strerror}") from None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    out = g.output()
    out.line(f"serving {config.logs} at {server.url}, the status page at {server.url.split(server.prefix)[0]}/status "
             "(Ctrl-C to stop)")
    out.emit({"url": server.url, "root": str(server.root), "prefix": server.prefix,
              "host": server.address[0], "port": server.address[1]})
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
