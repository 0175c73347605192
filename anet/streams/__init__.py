"""Results out and kept: the journal, the output formats and their readers, keep-order,
the results folder, the joblog."""
