"""Figures and reports, built from run folders only: nothing here trains."""
