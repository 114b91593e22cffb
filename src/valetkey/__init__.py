"""Valetkey."""
