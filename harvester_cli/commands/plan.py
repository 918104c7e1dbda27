import click

from harvester_cli.commands import exit_code, pass_globals, queue_option, report


@click.command("plan", epilog="Example: harvester-cli plan --queue MY_QUEUE   # why (no) pilots?")
@queue_option
@pass_globals
def command(g, queues):
    """Print the worker plan per queue and resource type with every rule's input and result; submit nothing.
    The caps shared with other queues show their limit, their use over every host and each queue's share;
    the downtimes of the queues and their CEs show what is down, until when and why.

    Exit codes: 0 the plan stands on what PanDA said; 1 part of it could not be learnt (e.g. PanDA unreachable:
    pull queues then get their empty-pilot floor only; the GOCDB feed unreadable), and the reason is printed.
    """
    from harvester_cli.output import Column, number
    from harvester_cli.output.downtimes import caps_table, downtimes_table
    from harvester_cli.steps import downtimes
    from harvester_cli.steps.submit import submit

    instance = g.instance()
    selected = g.selected(queues)
    run = submit(instance, selected, dry_run=True)
    down = downtimes.summary(instance, selected)
    out = g.output()
    out.table("plan", [Column("queue", cut="middle", min=12), Column("resource type", cut="never"),
                       number("new workers")],
              [(q.queue, rt, n) for q in run.queues for rt, n in (q.plan.per_resource_type.items() if q.plan else [])])
    caps_table(out, [q.plan for q in run.queues], wide=False)
    if down["downtimes"]:
        downtimes_table(out, "downtimes (under way or announced)", down["downtimes"], wide=False)
    for q in run.queues:
        if q.plan:
            out.line(f"{q.queue}:")
            for step in q.plan.trace:
                out.line(f"  {step}")
    report(out, run.problems() + down["problems"])
    out.emit({"queues": [{"queue": q.queue, "plan": q.plan.per_resource_type if q.plan else {},
                          "walltime": q.plan.walltime if q.plan else None,
                          "trace": [{"rule": s.rule, "inputs": s.inputs, "result": s.result} for s in q.plan.trace]
                          if q.plan else [], "demand": q.plan.demand if q.plan else None,
                          "caps": q.plan.caps if q.plan else []} for q in run.queues],
              "downtimes": down})
    return exit_code(run.partial or bool(down["problems"]))
