"""``capsafe sweep``: ``plan`` reads a sweep file into run specs; ``execute`` runs them locally, on
OpenAI-compatible servers or as Ray tasks, writing through one store."""
