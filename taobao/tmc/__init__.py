"""Taobao's TMC push protocol: the frame codec (pure) and what a session reports."""
