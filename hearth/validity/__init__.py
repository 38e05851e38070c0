"""What counts of what comes in: intake in SECURITY.md §4's order, cutoffs, retraction, joins,
snapshots, and the alerts that follow."""
