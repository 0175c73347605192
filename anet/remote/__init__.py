"""Reaching the end machines: host specs and their sources, SSH connections, the shipped
dispatcher and its boot, one dispatcher's session, and one host's life."""
