"""lclient: the command-line client of lclusterd, and a small Python client library (JobsClient)."""
