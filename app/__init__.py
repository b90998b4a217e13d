"""Application layer: settings, the Faust app, topics and codecs, the CLI."""
