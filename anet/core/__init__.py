"""The pure core: what a run decides, with no I/O and no clock of its own (events and `now`
in, decisions out). Tested on fake clocks, in milliseconds."""
