import click

from harvester_cli.commands import exit_code, pass_globals, recorded


@click.command("renew-proxy", epilog="Example: harvester-cli renew-proxy --profile atlas_production --check")
@click.option("--profile", "profiles", multiple=True, metavar="NAME",
              help="Only this [proxies.NAME] or [tokens.NAME] profile (repeatable; with --check, `panda` is a "
                   "[panda] proxy no profile maintains). Default: all.")
@click.option("--check", "check_only", is_flag=True,
              help="Only report what each proxy or token holds (a [panda] proxy no profile maintains too); renew "
                   "nothing, mail nothing.")
@click.option("--force", is_flag=True, help="Renew even when enough lifetime is left.")
@click.option("--no-mail", is_flag=True, help="Do not mail problems (they are still printed and logged).")
@pass_globals
@recorded("renew-proxy")
def command(g, profiles, check_only, force, no_mail):
    """Keep proxies and token files alive: renew below the minimum lifetime, trying each profile's
    certificates in order; verify the result; mail problems (throttled).

    Exit codes: 0 all fine, 1 a certificate failed or renewal failed (or --check: something needs renewal),
    2 bad configuration.
    """
    from harvester_cli.model import duration
    from harvester_cli.site.renewal import renew

    config = g.config()
    run = renew(config, profiles, force=force, check_only=check_only, mail=not no_mail)
    g.items = sum(1 for r in run.results if r.action == "renewed")
    out = g.output()
    out.table("credentials", ["profile", "kind", "action", "time left", "identity / FQAN / audience", "from",
                              "note"], [
        (r.profile, r.kind, r.action, duration(r.time_left),
         " ".join(x for x in (r.identity, r.fqans[0] if r.fqans else None, r.audience) if x) or None,
         r.certificate, r.reason if r.action != "ok" else None) for r in run.results])
    for r in run.results:
        for a in r.attempts:
            out.line(f"{r.profile}: {a.certificate}: {'ok' if a.ok else 'failed'} ({a.seconds:.2f} s)"
                     + (f": {a.reason}" if a.reason else ""))
    if not run.results:
        out.line("no [proxies.NAME] or [tokens.NAME] profile configured"
                 + ("; --check reports the [panda] proxy too" if config.panda.proxy and not check_only else ""))
    if run.alerts is not None:
        a = run.alerts
        if a.error:
            out.line(a.error)
        elif a.sent or a.throttled:
            out.line(f"alert mail: {len(a.sent)} problem(s) sent to {', '.join(a.recipients)}, "
                     f"{len(a.throttled)} throttled" if a.configured else "")
        elif run.problems and not a.configured:
            out.line("problems not mailed: no [smtp] recipients configured")
    from dataclasses import asdict

    out.emit({"profiles": [asdict(r) for r in run.results],
              "alerts": asdict(run.alerts) if run.alerts is not None else None,
              "check": check_only})
    return exit_code(run.partial)
