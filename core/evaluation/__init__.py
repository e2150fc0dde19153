"""Evaluating generators and the run report."""
