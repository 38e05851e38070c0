"""Who is in a group, changed by its admins: member changes, new keys when someone is out, removals
written again."""
