"""Scripted fake models for the tests and the demo."""
