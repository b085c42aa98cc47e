"""Using the pushed models from the command line: transcribe, verify, embed and cluster, on files
in the process or on a corpus through the batch inference job."""
