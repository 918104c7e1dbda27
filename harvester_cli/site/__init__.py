"""Site operations around the cycle: credentials (`proxies`, `tokens`, shared `credentials` results,
`bearer`, WLCG tokens as data, and `renewal`, the renew-proxy run), throttled alert mail (`alerts`),
secret files written 0600 and locked (`secretfiles`), the log tree's layout and each command's own log
(`logs`), log retention (`retention`), the read-only log server (`logserver`) with its status page
(`statuspage`), Prometheus metrics (`metrics`) and the service metrics PanDA's monitor shows
(`hostmetrics`), and the time left on every proxy and token (`lifetimes`).

Layer: below the steps, backends and panda, above config. Imported by the commands, the steps, the
backends (secretfiles, bearer, logs), the PanDA simulator's test PKI (proxies), and anything that makes a
directory (`logs.make_dirs`: never writable by group or others, whatever the umask). Imports config, model and
errors only (and the package's version); never the state database, panda, a step or a backend (the
commands hand over what they need from the store, e.g. which workers are still active).
"""
