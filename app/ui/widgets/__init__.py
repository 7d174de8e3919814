"""Reusable widgets: cards, chips, bars, icons, layouts."""
