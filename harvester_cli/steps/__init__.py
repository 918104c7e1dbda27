"""What each command does: one module per cycle step (`fetch_jobs`, `submit`, `poll`, `propagate`, `sweep`),
`monitor` (status, metrics, the status page), `cycle`, which chains the steps, and `demo`, which drives
cycles against the PanDA simulator. Below the steps sit the pieces they share: `caps` (the caps several
queues share, as a queue's plan sees them), then `planner` (how many workers, pure), `registration` (this
instance at PanDA), `transitions` (what a push job does when its worker moves) and `downtimes` (announcing
them, and what is down for status, plan and the metrics). Steps orchestrate and decide: they pass a state
transaction down and typed PanDA objects around; they hold no SQL and no PanDA field names.

Layer: imported by the commands (and by scripts and tests that drive the library directly); imports the
instance and the layers below it. A step never imports another step of its floor (cycle chains them, demo
drives the cycle) nor a command.
"""
