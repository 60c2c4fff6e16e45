"""Presentation: terminal views, the HTML report, the score chart."""
