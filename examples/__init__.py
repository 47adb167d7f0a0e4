"""Runnable examples of how an ERP uses the service's tables (not part of the installed package)."""
