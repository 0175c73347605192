"""What people see: the live view and status lines, the end summary, `anet status` and
`anet report`, tables, escaping of what hosts say, and stderr that never blocks."""
