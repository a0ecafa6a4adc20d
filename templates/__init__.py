"""Jinja2 templates of the HTML report, packaged as ``auditor.templates``."""
