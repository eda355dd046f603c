"""CSS and JS of the annotation pages (package data, served under /annotate/static/)."""
