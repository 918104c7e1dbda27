"""Site operations around the cycle: credentials (`proxies`, `tokens`, shared `credentials` results, and
`renewal`, the renew-proxy run), throttled alert mail (`alerts`), secret files written 0600 and locked
(`secretfiles`), the log tree's layout and each command's own log (`logs`), log retention
(`retention`), and the read-only log server (`logserver`).

Imports config, model and errors only; never the state database, a step or a backend (the commands hand
over what they need from the store, e.g. which workers are still active).
"""
