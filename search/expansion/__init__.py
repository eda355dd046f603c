"""Expanded recall: own small BERT, query-rewrite discriminator, two-tower vector recall (issue 10)."""
