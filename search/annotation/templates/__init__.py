"""Jinja2 templates of the annotation pages (package data)."""
