"""The daemon's composition root: settings, wiring, supervision, HTTP, the commands and the demo."""
