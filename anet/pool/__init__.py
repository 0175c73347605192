"""The resident master (`anet up`): a daemon that keeps one `Cluster` open and runs the batches
its owner's clients submit, several at once, over a unix socket only they can reach.

`place` finds the private directory, socket, pid file and log; `wire` frames the messages;
`server` is the daemon's side, `client` the commands' side.
"""
