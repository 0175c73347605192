"""The deps folder: scanned and hashed on the master, synced to each host as a delta."""
